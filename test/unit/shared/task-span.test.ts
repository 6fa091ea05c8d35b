import type { Span, SpanContext } from '@opentelemetry/api';
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
} from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { TaskSpanRecorder } from '../../../services/shared/task-span';
import { startTelemetry } from '../../../services/shared/telemetry';
import { startTaskSpan, taskAttributes } from '../../../services/shared/task-tracing';

const PARENT: SpanContext = {
  traceId: '0af7651916cd43dd8448eb211c80319c',
  spanId: 'b7ad6b7169203331',
  traceFlags: TraceFlags.SAMPLED,
  isRemote: true,
};
const LINKED: SpanContext = { ...PARENT, spanId: '00f067aa0ba902b7' };
const FACTS = { taskId: 't-1', pipeline: 'demo', stage: 'parse', attempt: 2, workerId: 'w-1' };

/** An SDK tracer and a TaskSpanRecorder over the same resource, scope and processor. */
function both(parentBased = true) {
  const exporter = new InMemorySpanExporter();
  const processor = new SimpleSpanProcessor(exporter as SpanExporter);
  const resource = resourceFromAttributes({ 'service.name': 'dsat-test' });
  const provider = new BasicTracerProvider({ resource, spanProcessors: [processor] });
  const tracer = provider.getTracer('dsat');
  const recorder = new TaskSpanRecorder({
    resource,
    scope: { name: 'dsat' },
    processors: [processor],
    parentBased,
  });
  const parentContext = (parent: SpanContext | undefined) =>
    parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  return {
    exporter,
    sdk: (parent: SpanContext | undefined, links = [{ context: LINKED }]) =>
      tracer.startSpan(
        'dsat.process parse',
        { kind: SpanKind.CONSUMER, attributes: taskAttributes(FACTS, 'process'), links },
        parentContext(parent),
      ),
    lean: (parent: SpanContext | undefined, links = [{ context: LINKED }]) =>
      recorder.start(
        'dsat.process parse',
        SpanKind.CONSUMER,
        parent,
        taskAttributes(FACTS, 'process'),
        links,
      ),
  };
}

/** What a span records, without its own id and clock-read times. */
function recorded(s: ReadableSpan) {
  return {
    name: s.name,
    kind: s.kind,
    traceId: s.spanContext().traceId,
    traceFlags: s.spanContext().traceFlags,
    parent: s.parentSpanContext,
    attributes: s.attributes,
    events: s.events.map((e) => ({ ...e, time: e.name.startsWith('at ') ? e.time : 'now' })),
    links: s.links,
    status: s.status,
    dropped: [s.droppedAttributesCount, s.droppedEventsCount, s.droppedLinksCount],
    resource: s.resource.attributes,
    scope: s.instrumentationScope.name,
    ended: s.ended,
  };
}

const BOOM = Object.assign(new Error('boom'), { code: 'E_BOOM' });

/** Everything a handler may do with its span, the wrong things included. */
function useSpan(span: Span): void {
  span.setAttribute('handler.count', 3);
  span.setAttribute('dsat.stage', 'renamed');
  span.setAttribute('', 1);
  span.setAttribute('handler.bad', { nested: true } as never);
  span.setAttributes({ 'handler.list': ['a', 'b'], 'handler.flag': true });
  span.addEvent('checkpoint', { rows: 10, bad: { no: 1 } as never });
  span.addEvent('at epoch ms', 1_700_000_000_123);
  span.addEvent('at date', { why: 'explicit' }, new Date(1_700_000_000_456));
  span.addEvent('at hrtime', [1_700_000_000, 789]);
  span.addEvent('performance time', 1);
  span.recordException(BOOM);
  span.recordException('plain message');
  span.recordException({} as never);
  span.addLink({
    context: { ...LINKED, spanId: '1111111111111111' },
    attributes: { why: 'fan-in' },
  });
  span.setStatus({ code: SpanStatusCode.ERROR, message: 'handler failed' });
  span.setStatus({ code: SpanStatusCode.UNSET });
  span.updateName('dsat.process parse (renamed)');
  span.end();
  span.setAttribute('after.end', 1);
  span.addEvent('after end');
  span.setStatus({ code: SpanStatusCode.OK });
  span.end();
}

describe('task spans made without the SDK tracer', () => {
  it('record what the SDK records for every operation a span has, and are exported once', () => {
    const { exporter, sdk, lean } = both();
    useSpan(sdk(PARENT));
    useSpan(lean(PARENT));
    const [a, b] = exporter.getFinishedSpans();
    expect(exporter.getFinishedSpans()).toHaveLength(2);
    expect(recorded(b!)).toEqual(recorded(a!));
    expect(b!.spanContext().spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(b!.spanContext().spanId).not.toBe(PARENT.spanId);
    const ns = (t: readonly [number, number]) => BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
    expect(ns(b!.endTime)).toBeGreaterThanOrEqual(ns(b!.startTime));
    expect(ns(b!.duration)).toBe(ns(b!.endTime) - ns(b!.startTime));
    expect(Math.abs(b!.startTime[0] - Date.now() / 1000)).toBeLessThan(60);
    // A performance timestamp is read as the SDK reads it: on the wall clock at the time origin.
    // That is not performance.timeOrigin: the monotonic clock drifts from the wall clock (seconds
    // in a long-lived CI machine), so the origin is read back from both clocks now.
    const perf = b!.events.find((e) => e.name === 'performance time')!;
    const ms = perf.time[0] * 1000 + perf.time[1] / 1e6;
    expect(Math.abs(ms - (Date.now() - performance.now() + 1))).toBeLessThan(50);
  });

  it('keep the SDK default limits: 128 attributes, events and links, the oldest events and links dropped', () => {
    const { exporter, sdk, lean } = both();
    const links = Array.from({ length: 130 }, (_, i) => ({
      context: { ...LINKED, spanId: (i + 1).toString(16).padStart(16, '0') },
      attributes: Object.fromEntries(Array.from({ length: 130 }, (_, k) => [`a${k}`, k])),
    }));
    for (const span of [sdk(PARENT, links), lean(PARENT, links)]) {
      for (let i = 0; i < 130; i++) span.setAttribute(`extra.${i}`, i);
      for (let i = 0; i < 130; i++) span.addEvent(`event ${i}`);
      span.end();
    }
    const [a, b] = exporter.getFinishedSpans();
    expect(recorded(b!)).toEqual(recorded(a!));
    expect(b!.droppedAttributesCount).toBeGreaterThan(0);
    expect(b!.events).toHaveLength(128);
    expect(b!.links).toHaveLength(128);
  });

  it('start in a context whose span is their parent, for processors that read it', () => {
    const seen: (SpanContext | undefined)[] = [];
    const recorder = new TaskSpanRecorder({
      resource: resourceFromAttributes({}),
      scope: { name: 'dsat' },
      processors: [
        {
          onStart: (_span, parentContext) => void seen.push(trace.getSpanContext(parentContext)),
          onEnd: () => undefined,
          forceFlush: () => Promise.resolve(),
          shutdown: () => Promise.resolve(),
        },
      ],
      parentBased: true,
    });
    recorder.start('a', SpanKind.INTERNAL, PARENT, {}, []).end();
    recorder.start('b', SpanKind.INTERNAL, undefined, {}, []).end();
    expect(seen).toEqual([PARENT, undefined]);
  });

  it('follow the default sampler: a new sampled trace without a parent, a parent’s unsampled flag kept', () => {
    const { exporter, lean } = both(true);
    const root = lean(undefined);
    expect(root.isRecording()).toBe(true);
    expect(root.spanContext().traceId).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
    expect(root.spanContext().traceFlags).toBe(TraceFlags.SAMPLED);
    root.end();
    const unsampled = lean({ ...PARENT, traceFlags: TraceFlags.NONE });
    expect(unsampled.isRecording()).toBe(false);
    expect(unsampled.spanContext()).toMatchObject({
      traceId: PARENT.traceId,
      traceFlags: TraceFlags.NONE,
    });
    expect(unsampled.spanContext().spanId).not.toBe(PARENT.spanId);
    unsampled.end();
    expect(exporter.getFinishedSpans()).toHaveLength(1);
    const alwaysOn = both(false).lean({ ...PARENT, traceFlags: TraceFlags.NONE });
    expect(alwaysOn.isRecording()).toBe(true);
  });
});

describe('startTelemetry and task spans', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
    trace.disable();
    context.disable();
    propagation.disable();
  });

  async function taskSpanUnder(env: Record<string, string>) {
    Object.assign(process.env, env);
    const spans: ReadableSpan[] = [];
    const collect: SpanProcessor = {
      onStart: () => undefined,
      onEnd: (span) => void spans.push(span),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
    const telemetry = startTelemetry({
      serviceName: 'dsat-test',
      spanProcessors: [collect],
      env: {},
    });
    startTaskSpan('dsat.submit', SpanKind.PRODUCER, undefined, FACTS, 'send').end();
    await telemetry.shutdown();
    return { spans };
  }

  it('carry the service’s resource by default', async () => {
    const { spans } = await taskSpanUnder({});
    expect(spans).toHaveLength(1);
    expect(spans[0]!.resource.attributes['service.name']).toBe('dsat-test');
    expect(spans[0]!.instrumentationScope.name).toBe('dsat');
  });

  it('honour a configured sampler', async () => {
    expect((await taskSpanUnder({ OTEL_TRACES_SAMPLER: 'always_off' })).spans).toHaveLength(0);
    const ratio = { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' };
    expect((await taskSpanUnder(ratio)).spans).toHaveLength(0);
  });

  it('honour configured span limits', async () => {
    const { spans } = await taskSpanUnder({ OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '2' });
    expect(spans[0]!.attributes['dsat.pipeline']).toBe('de');
  });
});
