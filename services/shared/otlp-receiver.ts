import http from 'node:http';
import zlib from 'node:zlib';
import type { Logger } from './logger';
import { otlpJsonFromProtobuf } from './otlp-protobuf';
import type { SpanStore, StoredSpan } from './span-store';

/**
 * A minimal OTLP/HTTP trace receiver for `dsat up`: `POST /v1/traces` takes OTLP protobuf (the
 * exporters' default) or JSON (OTEL_EXPORTER_OTLP_PROTOCOL=http/json), gzipped or not, into a
 * SpanStore, and `GET /dsat/traces/<trace id>` answers the spans of one trace for `dsat trace`.
 */
export interface OtlpReceiver {
  readonly url: string;
  /** With `deferDecoding`: decodes the requests held so far into the store; returns the spans. */
  decodeHeld(): number;
  close(): Promise<void>;
}

export interface OtlpReceiverOptions {
  readonly host: string;
  readonly port: number;
  readonly logger: Logger;
  /**
   * Answer each export at once and decode it only on `decodeHeld()`: the benchmark's receiver
   * then costs the mesh it measures no more CPU than a collector on another machine would.
   */
  readonly deferDecoding?: boolean;
}

interface HeldRequest {
  readonly body: Buffer;
  readonly protobuf: boolean;
  readonly gzip: boolean;
}

/** Decodes one export request into spans; throws on a body that is not OTLP. */
function decodeRequest({ body, protobuf, gzip }: HeldRequest): StoredSpan[] {
  const raw = gzip ? zlib.gunzipSync(body) : body;
  const request = protobuf
    ? (otlpJsonFromProtobuf(raw) as OtlpRequest)
    : (JSON.parse(raw.toString('utf8')) as OtlpRequest);
  return spansFromOtlpJson(request);
}

type OtlpValue = {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
};
type OtlpAttribute = { key: string; value?: OtlpValue };
type OtlpSpan = {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: OtlpAttribute[];
  status?: { code?: number; message?: string };
  links?: { traceId: string; spanId: string }[];
};
type OtlpRequest = {
  resourceSpans?: {
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: { spans?: OtlpSpan[] }[];
  }[];
};

/** OTLP JSON ids are hex; some senders use base64. */
function hexId(id: string | undefined, bytes: number): string {
  if (!id) return '';
  if (id.length === bytes * 2 && /^[0-9a-fA-F]+$/.test(id)) return id.toLowerCase();
  return Buffer.from(id, 'base64').toString('hex');
}

function attributeValue(v: OtlpValue | undefined): string | number | boolean | undefined {
  if (!v) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  return v.boolValue;
}

function attributes(list: OtlpAttribute[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const a of list ?? []) {
    const v = attributeValue(a.value);
    if (v !== undefined) out[a.key] = v;
  }
  return out;
}

export function spansFromOtlpJson(body: OtlpRequest): StoredSpan[] {
  const out: StoredSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const serviceName = String(attributes(rs.resource?.attributes)['service.name'] ?? 'unknown');
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: hexId(s.traceId, 16),
          spanId: hexId(s.spanId, 8),
          parentSpanId: hexId(s.parentSpanId, 8),
          name: s.name,
          kind: s.kind ?? 1,
          serviceName,
          startTimeUnixNano: String(s.startTimeUnixNano),
          endTimeUnixNano: String(s.endTimeUnixNano),
          statusCode: s.status?.code ?? 0,
          statusMessage: s.status?.message ?? '',
          attributes: attributes(s.attributes),
          links: (s.links ?? []).map((l) => ({
            traceId: hexId(l.traceId, 16),
            spanId: hexId(l.spanId, 8),
          })),
        });
      }
    }
  }
  return out;
}

const MAX_BODY = 16 * 1024 * 1024;

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startOtlpReceiver(
  store: SpanStore,
  options: OtlpReceiverOptions,
): Promise<OtlpReceiver> {
  let held: HeldRequest[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://receiver');
    const traceMatch = /^\/dsat\/traces\/([0-9a-fA-F]{32})$/.exec(url.pathname);
    if (req.method === 'GET' && traceMatch) {
      reply(res, 200, { spans: store.trace(traceMatch[1]!) });
      return;
    }
    if (req.method !== 'POST' || url.pathname !== '/v1/traces') {
      reply(res, 404, { message: 'POST /v1/traces or GET /dsat/traces/<trace id>' });
      return;
    }
    const contentType = req.headers['content-type'] ?? '';
    const protobuf = contentType.startsWith('application/x-protobuf');
    if (!protobuf && !contentType.startsWith('application/json')) {
      reply(res, 415, {
        message: 'this receiver takes OTLP as application/x-protobuf or application/json',
      });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reply(res, 413, { message: `body over ${MAX_BODY} bytes` });
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      try {
        const request: HeldRequest = {
          body: Buffer.concat(chunks),
          protobuf,
          gzip: req.headers['content-encoding'] === 'gzip',
        };
        if (options.deferDecoding) held.push(request);
        else for (const span of decodeRequest(request)) store.add(span);
        if (protobuf) {
          // An empty ExportTraceServiceResponse: full success.
          res.writeHead(200, { 'content-type': 'application/x-protobuf' });
          res.end();
        } else reply(res, 200, { partialSuccess: {} });
      } catch (err) {
        options.logger.debug({ err }, 'bad OTLP request');
        reply(res, 400, { message: `not an OTLP ${protobuf ? 'protobuf' : 'JSON'} trace request` });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : options.port;
  return {
    url: `http://${options.host}:${port}`,
    decodeHeld() {
      const requests = held;
      held = [];
      let n = 0;
      for (const request of requests) {
        try {
          for (const span of decodeRequest(request)) {
            store.add(span);
            n++;
          }
        } catch (err) {
          options.logger.warn({ err }, 'a held OTLP request is not OTLP');
        }
      }
      return n;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
