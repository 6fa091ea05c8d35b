import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

/*
 * OTLP/HTTP's default body, a protobuf ExportTraceServiceRequest, read into the shape of its JSON
 * encoding (ids as hex, times as decimal strings), so that one code path stores both. Only the
 * fields `dsat trace` shows are read; the rest are skipped. Field numbers are those of
 * opentelemetry/proto/{collector/trace,trace,resource,common}/v1.
 */

export type OtlpJsonValue = {
  stringValue?: string;
  intValue?: string;
  doubleValue?: number;
  boolValue?: boolean;
};
export type OtlpJsonAttribute = { key: string; value?: OtlpJsonValue };
export type OtlpJsonSpan = {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: OtlpJsonAttribute[];
  status?: { code?: number; message?: string };
  links?: { traceId: string; spanId: string }[];
};
export type OtlpJsonRequest = {
  resourceSpans?: {
    resource?: { attributes?: OtlpJsonAttribute[] };
    scopeSpans?: { spans?: OtlpJsonSpan[] }[];
  }[];
};

/** Calls `field` for each field of one message; fields it does not take are skipped. */
function readFields(
  bytes: Uint8Array,
  field: (no: number, r: BinaryReader, wireType: WireType) => boolean,
): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wireType] = r.tag();
    if (!field(no, r, wireType)) r.skip(wireType, no);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

function anyValue(bytes: Uint8Array): OtlpJsonValue {
  const v: OtlpJsonValue = {};
  readFields(bytes, (no, r) => {
    if (no === 1) v.stringValue = r.string();
    else if (no === 2) v.boolValue = r.bool();
    else if (no === 3) v.intValue = String(r.int64());
    else if (no === 4) v.doubleValue = r.double();
    else return false; // arrays, key-value lists and bytes are not shown
    return true;
  });
  return v;
}

function keyValue(bytes: Uint8Array): OtlpJsonAttribute {
  const kv: OtlpJsonAttribute = { key: '' };
  readFields(bytes, (no, r) => {
    if (no === 1) kv.key = r.string();
    else if (no === 2) kv.value = anyValue(r.bytes());
    else return false;
    return true;
  });
  return kv;
}

function span(bytes: Uint8Array): OtlpJsonSpan {
  const s: OtlpJsonSpan = {
    traceId: '',
    spanId: '',
    name: '',
    startTimeUnixNano: '0',
    endTimeUnixNano: '0',
    attributes: [],
    links: [],
  };
  readFields(bytes, (no, r) => {
    switch (no) {
      case 1:
        s.traceId = hex(r.bytes());
        return true;
      case 2:
        s.spanId = hex(r.bytes());
        return true;
      case 4:
        s.parentSpanId = hex(r.bytes());
        return true;
      case 5:
        s.name = r.string();
        return true;
      case 6:
        s.kind = r.int32();
        return true;
      case 7:
        s.startTimeUnixNano = String(r.fixed64());
        return true;
      case 8:
        s.endTimeUnixNano = String(r.fixed64());
        return true;
      case 9:
        s.attributes!.push(keyValue(r.bytes()));
        return true;
      case 13: {
        const link = { traceId: '', spanId: '' };
        readFields(r.bytes(), (n, lr) => {
          if (n === 1) link.traceId = hex(lr.bytes());
          else if (n === 2) link.spanId = hex(lr.bytes());
          else return false;
          return true;
        });
        s.links!.push(link);
        return true;
      }
      case 15: {
        const status: { code?: number; message?: string } = {};
        readFields(r.bytes(), (n, sr) => {
          if (n === 2) status.message = sr.string();
          else if (n === 3) status.code = sr.int32();
          else return false;
          return true;
        });
        s.status = status;
        return true;
      }
      default:
        return false;
    }
  });
  return s;
}

/** Reads an OTLP ExportTraceServiceRequest; throws on bytes that are not one. */
export function otlpJsonFromProtobuf(body: Uint8Array): OtlpJsonRequest {
  const request: OtlpJsonRequest = { resourceSpans: [] };
  readFields(body, (no, r, wireType) => {
    if (no !== 1 || wireType !== WireType.LengthDelimited) return false;
    const rs: NonNullable<OtlpJsonRequest['resourceSpans']>[number] = { scopeSpans: [] };
    readFields(r.bytes(), (n, rr) => {
      if (n === 1) {
        const attributes: OtlpJsonAttribute[] = [];
        readFields(rr.bytes(), (m, ar) => {
          if (m !== 1) return false;
          attributes.push(keyValue(ar.bytes()));
          return true;
        });
        rs.resource = { attributes };
      } else if (n === 2) {
        const spans: OtlpJsonSpan[] = [];
        readFields(rr.bytes(), (m, sr) => {
          if (m !== 2) return false;
          spans.push(span(sr.bytes()));
          return true;
        });
        rs.scopeSpans!.push({ spans });
      } else return false;
      return true;
    });
    request.resourceSpans!.push(rs);
    return true;
  });
  return request;
}
