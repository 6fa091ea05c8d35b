import http from 'node:http';
import type { Logger } from './logger';
import type { SpanStore, StoredSpan } from './span-store';

/**
 * A minimal OTLP/HTTP trace receiver for `dsat up`: `POST /v1/traces` takes OTLP JSON (what dsat's
 * processes send with OTEL_EXPORTER_OTLP_PROTOCOL=http/json) into a SpanStore, and
 * `GET /dsat/traces/<trace id>` answers the spans of one trace for `dsat trace`.
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
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
      reply(res, 415, {
        message: 'this receiver takes OTLP JSON: set OTEL_EXPORTER_OTLP_PROTOCOL=http/json',
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
        for (const span of spansFromOtlpJson(
          JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpRequest,
        )) {
          store.add(span);
        }
        reply(res, 200, { partialSuccess: {} });
      } catch (err) {
        options.logger.debug({ err }, 'bad OTLP request');
        reply(res, 400, { message: 'not OTLP JSON' });
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
