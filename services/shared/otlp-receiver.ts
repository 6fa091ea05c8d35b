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
  close(): Promise<void>;
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
  options: { host: string; port: number; logger: Logger },
): Promise<OtlpReceiver> {
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
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
        const request = protobuf
          ? (otlpJsonFromProtobuf(body) as OtlpRequest)
          : (JSON.parse(body.toString('utf8')) as OtlpRequest);
        for (const span of spansFromOtlpJson(request)) store.add(span);
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
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
