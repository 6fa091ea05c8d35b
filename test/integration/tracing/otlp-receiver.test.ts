import { SpanKind } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { renderWaterfall } from '../../../cli/waterfall';
import { createLogger } from '../../../services/shared/logger';
import type { OtlpReceiver } from '../../../services/shared/otlp-receiver';
import { startOtlpReceiver } from '../../../services/shared/otlp-receiver';
import type { StoredSpan } from '../../../services/shared/span-store';
import { SpanStore } from '../../../services/shared/span-store';
import {
  formatTraceparent,
  SPAN_NAMES,
  startTaskSpan,
} from '../../../services/shared/task-tracing';

function providerFor(service: string, url: string) {
  return new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': service }),
    spanProcessors: [new SimpleSpanProcessor(new OTLPTraceExporter({ url: `${url}/v1/traces` }))],
  });
}

describe('the embedded OTLP receiver', () => {
  let receiver: OtlpReceiver;
  const store = new SpanStore(1000);
  beforeAll(async () => {
    receiver = await startOtlpReceiver(store, {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('test', 'silent'),
    });
  });
  afterAll(() => receiver.close());

  it('keeps spans that processes export as OTLP JSON, joined into one trace by traceparent', async () => {
    const router = providerFor('dsat-router', receiver.url);
    const worker = providerFor('dsat-worker', receiver.url);
    const facts = { taskId: 't-1', pipeline: 'demo', stage: 'parse', attempt: 1 };
    const submit = startTaskSpan(SPAN_NAMES.submit, SpanKind.PRODUCER, undefined, facts, 'send', {
      tracer: router.getTracer('dsat'),
    });
    const traceparent = formatTraceparent(submit.spanContext());
    const dispatch = startTaskSpan(
      SPAN_NAMES.dispatch('parse'),
      SpanKind.INTERNAL,
      traceparent,
      facts,
      'send',
      { tracer: router.getTracer('dsat') },
    );
    const process = startTaskSpan(
      SPAN_NAMES.process('parse'),
      SpanKind.CONSUMER,
      formatTraceparent(dispatch.spanContext()),
      { ...facts, workerId: 'w1' },
      'process',
      { tracer: worker.getTracer('dsat') },
    );
    process.end();
    dispatch.end();
    submit.end();
    await Promise.all([router.forceFlush(), worker.forceFlush()]);

    const traceId = submit.spanContext().traceId;
    const res = await fetch(`${receiver.url}/dsat/traces/${traceId}`);
    const { spans } = (await res.json()) as { spans: StoredSpan[] };
    expect(spans.map((s) => s.name).sort()).toEqual([
      'dsat.dispatch parse',
      'dsat.process parse',
      'dsat.submit',
    ]);
    expect(new Set(spans.map((s) => s.serviceName))).toEqual(
      new Set(['dsat-router', 'dsat-worker']),
    );
    const byName = new Map(spans.map((s) => [s.name, s]));
    expect(byName.get('dsat.process parse')?.parentSpanId).toBe(
      byName.get('dsat.dispatch parse')?.spanId,
    );
    expect(byName.get('dsat.process parse')?.attributes['dsat.worker_id']).toBe('w1');
    expect(byName.get('dsat.submit')?.kind).toBe(4);

    const lines = renderWaterfall(spans).split('\n');
    expect(lines[0]).toContain(`trace ${traceId}  3 spans, 2 services`);
    expect(lines[2]).toMatch(/^dsat\.submit\s+dsat-router/);
    expect(lines[3]).toMatch(/^ {2}dsat\.dispatch parse\s+dsat-router/);
    expect(lines[4]).toMatch(/^ {4}dsat\.process parse\s+dsat-worker .*█.*consumer/);
    expect(renderWaterfall([byName.get('dsat.submit')!]).split('\n')[0]).toContain(
      `trace ${traceId}  1 span, 1 service`,
    );
    await Promise.all([router.shutdown(), worker.shutdown()]);
  });

  it('stores the same span whether it came as OTLP JSON, protobuf, or gzipped protobuf', async () => {
    const senders = {
      json: new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` }),
      protobuf: new OTLPProtoTraceExporter({ url: `${receiver.url}/v1/traces` }),
      'protobuf+gzip': new OTLPProtoTraceExporter({
        url: `${receiver.url}/v1/traces`,
        compression: CompressionAlgorithm.GZIP,
      }),
    };
    for (const [how, exporter] of Object.entries(senders)) {
      const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': `svc-${how}` }),
        spanProcessors: [new SimpleSpanProcessor(exporter)],
      });
      const tracer = provider.getTracer('dsat');
      const other = tracer.startSpan('other');
      other.end();
      const span = tracer.startSpan('call', {
        kind: SpanKind.CLIENT,
        attributes: { s: 'text', i: 7, d: 1.5, b: true },
        links: [{ context: other.spanContext() }],
      });
      span.setStatus({ code: 2, message: 'boom' });
      span.end();
      await provider.forceFlush();
      const { traceId, spanId } = span.spanContext();
      const res = await fetch(`${receiver.url}/dsat/traces/${traceId}`);
      const { spans } = (await res.json()) as { spans: StoredSpan[] };
      const got = spans.find((x) => x.spanId === spanId)!;
      expect(got.serviceName).toBe(`svc-${how}`);
      expect(BigInt(got.endTimeUnixNano)).toBeGreaterThan(0n);
      const { serviceName: _s, startTimeUnixNano: _a, endTimeUnixNano: _b, ...rest } = got;
      expect(rest).toEqual({
        traceId,
        spanId,
        parentSpanId: '',
        name: 'call',
        kind: 3,
        statusCode: 2,
        statusMessage: 'boom',
        attributes: { s: 'text', i: 7, d: 1.5, b: true },
        links: [{ traceId: other.spanContext().traceId, spanId: other.spanContext().spanId }],
      });
      await provider.shutdown();
    }
  });

  it('with deferDecoding, answers exports at once and stores their spans only on decodeHeld', async () => {
    const held = new SpanStore(100);
    const deferred = await startOtlpReceiver(held, {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('test', 'silent'),
      deferDecoding: true,
    });
    try {
      const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': 'svc-held' }),
        spanProcessors: [
          new SimpleSpanProcessor(
            new OTLPProtoTraceExporter({
              url: `${deferred.url}/v1/traces`,
              compression: CompressionAlgorithm.GZIP,
            }),
          ),
        ],
      });
      const tracer = provider.getTracer('dsat');
      for (const name of ['a', 'b', 'c']) tracer.startSpan(name).end();
      await provider.forceFlush();
      expect(held.size).toBe(0);
      expect(deferred.decodeHeld()).toBe(3);
      expect(held.size).toBe(3);
      expect(held.traceCount).toBe(3);
      expect(deferred.decodeHeld()).toBe(0);
      held.clear();
      expect([held.size, held.traceCount]).toEqual([0, 0]);
      await provider.shutdown();
    } finally {
      await deferred.close();
    }
  });

  it('refuses other content types, and bodies that are not OTLP, with a message', async () => {
    const post = (contentType: string, body: Uint8Array | string) =>
      fetch(`${receiver.url}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': contentType },
        body,
      });
    const text = await post('text/plain', 'hello');
    expect(text.status).toBe(415);
    expect(((await text.json()) as { message: string }).message).toContain(
      'application/x-protobuf',
    );
    const garbage = await post('application/x-protobuf', new Uint8Array([0x0a, 0xff, 0xff, 0xff]));
    expect(garbage.status).toBe(400);
    expect(((await garbage.json()) as { message: string }).message).toContain('protobuf');
  });
});
