import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TraceFlags } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import { otlpJsonFromProtobuf } from '../../../services/shared/otlp-protobuf';
import {
  batchSettingsFromEnv,
  EncodingBatchSpanProcessor,
  otlpHttpBatchExporter,
  type BatchSettings,
} from '../../../services/shared/otlp-span-export';

/** A real OTLP/HTTP endpoint that records the span names of every request; it can hold answers. */
async function startCollector() {
  const requests: string[][] = [];
  let holding = false;
  const held: (() => void)[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = otlpJsonFromProtobuf(Buffer.concat(chunks));
      const names = (body.resourceSpans ?? []).flatMap((r) =>
        (r.scopeSpans ?? []).flatMap((s) => (s.spans ?? []).map((span) => span.name)),
      );
      requests.push(names);
      const answer = () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      if (holding) held.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
  return {
    url,
    requests,
    hold: () => (holding = true),
    release: () => {
      holding = false;
      held.splice(0).forEach((answer) => answer());
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const settings = (s: Partial<BatchSettings>): BatchSettings => ({
  scheduledDelayMillis: 60_000,
  maxExportBatchSize: 512,
  maxQueueSize: 2048,
  exportTimeoutMillis: 10_000,
  ...s,
});

function tracerWith(processor: EncodingBatchSpanProcessor, sampler?: TraceIdRatioBasedSampler) {
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'dsat-test' }),
    spanProcessors: [processor],
    ...(sampler ? { sampler } : {}),
  });
  return { provider, tracer: provider.getTracer('dsat') };
}

const until = async (what: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('span export encoded as spans end (OTLP/HTTP protobuf)', () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  beforeEach(async () => {
    collector = await startCollector();
  });
  afterEach(() => collector.close());

  it('sends a batch when it is full, and what is left on forceFlush, every span once', async () => {
    const processor = new EncodingBatchSpanProcessor(
      otlpHttpBatchExporter({ url: collector.url }),
      settings({ maxExportBatchSize: 10 }),
    );
    const { provider, tracer } = tracerWith(processor);
    for (let i = 0; i < 25; i++) tracer.startSpan(`s${i}`).end();
    await until(() => collector.requests.length === 2);
    expect(collector.requests.map((r) => r.length)).toEqual([10, 10]);
    await provider.forceFlush();
    expect(collector.requests.flat()).toEqual(Array.from({ length: 25 }, (_, i) => `s${i}`));
    await provider.shutdown();
  });

  it('sends a batch that is not full once scheduledDelayMillis has passed', async () => {
    const processor = new EncodingBatchSpanProcessor(
      otlpHttpBatchExporter({ url: collector.url }),
      settings({ scheduledDelayMillis: 100 }),
    );
    const { provider, tracer } = tracerWith(processor);
    tracer.startSpan('alone').end();
    await until(() => collector.requests.length === 1);
    expect(collector.requests).toEqual([['alone']]);
    await provider.shutdown();
  });

  it('drops spans beyond maxQueueSize while the collector is slow, and sends the rest', async () => {
    const processor = new EncodingBatchSpanProcessor(
      otlpHttpBatchExporter({ url: collector.url }),
      settings({ maxExportBatchSize: 5, maxQueueSize: 20 }),
    );
    const { provider, tracer } = tracerWith(processor);
    collector.hold();
    for (let i = 0; i < 50; i++) tracer.startSpan(`s${i}`).end();
    collector.release();
    await provider.forceFlush();
    await until(() => collector.requests.flat().length === 20);
    expect(collector.requests.flat()).toEqual(Array.from({ length: 20 }, (_, i) => `s${i}`));
    // Room again once the queue has drained.
    tracer.startSpan('after').end();
    await provider.forceFlush();
    expect(collector.requests.flat().at(-1)).toBe('after');
    await provider.shutdown();
  });

  it('sends no span that was not sampled, and flushes on shutdown', async () => {
    const processor = new EncodingBatchSpanProcessor(
      otlpHttpBatchExporter({ url: collector.url }),
      settings({}),
    );
    const { provider, tracer } = tracerWith(processor, new TraceIdRatioBasedSampler(0));
    const span = tracer.startSpan('unsampled');
    expect(span.spanContext().traceFlags & TraceFlags.SAMPLED).toBe(0);
    span.end();
    await provider.forceFlush();
    expect(collector.requests).toEqual([]);

    const sampled = tracerWith(processor);
    sampled.tracer.startSpan('kept').end();
    await sampled.provider.shutdown();
    expect(collector.requests).toEqual([['kept']]);
    sampled.tracer.startSpan('after shutdown').end();
    await processor.forceFlush();
    expect(collector.requests).toEqual([['kept']]);
  });
});

describe('batchSettingsFromEnv', () => {
  it('reads OTEL_BSP_* like the BatchSpanProcessor, with its defaults for missing or bad values', () => {
    expect(batchSettingsFromEnv({})).toEqual({
      scheduledDelayMillis: 5000,
      maxExportBatchSize: 512,
      maxQueueSize: 2048,
      exportTimeoutMillis: 30000,
    });
    expect(
      batchSettingsFromEnv({
        OTEL_BSP_SCHEDULE_DELAY: '500',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '9000',
        OTEL_BSP_MAX_QUEUE_SIZE: '4096',
        OTEL_BSP_EXPORT_TIMEOUT: 'soon',
      }),
    ).toEqual({
      scheduledDelayMillis: 500,
      maxExportBatchSize: 4096, // at most the queue
      maxQueueSize: 4096,
      exportTimeoutMillis: 30000,
    });
  });
});
