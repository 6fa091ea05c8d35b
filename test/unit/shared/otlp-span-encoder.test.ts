import { describe, expect, it } from '@jest/globals';
import { SpanKind, SpanStatusCode, createTraceState } from '@opentelemetry/api';
import type { HrTime, Link, SpanContext } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import fc from 'fast-check';
import { otlpJsonFromProtobuf } from '../../../services/shared/otlp-protobuf';
import { SpanBatch } from '../../../services/shared/otlp-span-encoder';
import { TaskSpanRecorder } from '../../../services/shared/task-span';
import {
  SPAN_NAMES,
  sharedTaskAttributes,
  taskAttributes,
  type TaskOperation,
  type TaskSpanFacts,
} from '../../../services/shared/task-tracing';

/** The request a batch of these spans makes, as the export processor sends it. */
function encodeSpans(spans: readonly ReadableSpan[]): Uint8Array {
  const batch = new SpanBatch();
  for (const s of spans) batch.add(s);
  return batch.request();
}

/** What the OpenTelemetry serializer writes for the same spans: the reference. */
const reference = (spans: ReadableSpan[]) =>
  Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);

const hexId = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
// Strings of every kind: ASCII, 2-, 3- and 4-byte UTF-8, lone surrogates, over 127 bytes, either
// side of the encoder's short-string limits, and keys that repeat (the encoder keeps their bytes).
const text = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.constantFrom('dsat.task_id', 'messaging.system', 'dsat.attempt', 'k'),
  fc.string({ minLength: 50, maxLength: 70 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ minLength: 120, maxLength: 300 }),
  fc.string({ unit: 'grapheme', minLength: 40, maxLength: 80 }),
);
const number = fc.oneof(
  fc.integer(),
  fc.integer({ min: -2, max: 130 }),
  fc.double(),
  fc.constantFrom(2 ** 53, -(2 ** 53), 2 ** 62, -(2 ** 63), 2 ** 63, 0xffffffff, 0x100000000),
);
const primitive = fc.oneof(text, number, fc.boolean());
const value: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    primitive,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(text, tie('value'), { maxKeys: 3 }),
    fc.uint8Array({ maxLength: 200 }),
    fc.constant(undefined),
  ),
})).value;
const attributes = fc.dictionary(text, value, { maxKeys: 12 });
const hrTime: fc.Arbitrary<HrTime> = fc.tuple(
  fc.integer({ min: 0, max: 18_000_000_000 }),
  fc.integer({ min: 0, max: 999_999_999 }),
);
const spanContext: fc.Arbitrary<SpanContext> = fc.record({
  traceId: hexId(16),
  spanId: hexId(8),
  traceFlags: fc.integer({ min: 0, max: 255 }),
  isRemote: fc.option(fc.boolean(), { nil: undefined }),
  traceState: fc.option(
    fc.constantFrom('', 'vendor=value', 'a=1,b=2').map((s) => createTraceState(s)),
    { nil: undefined },
  ),
});

const resources = [
  resourceFromAttributes({ 'service.name': 'dsat-router', 'process.pid': 42 }),
  resourceFromAttributes(
    { 'service.name': 'dsat-wörker', 'host.arch': ['x', 'y'] },
    { schemaUrl: 'https://opentelemetry.io/schemas/1.26.0' },
  ),
];
const scopes = [
  { name: 'dsat' },
  { name: 'nice-grpc', version: '1.2.3', schemaUrl: 'https://opentelemetry.io/schemas/1.24.0' },
];

const span: fc.Arbitrary<ReadableSpan> = fc
  .record({
    context: spanContext,
    parent: fc.option(spanContext, { nil: undefined }),
    name: text,
    kind: fc.constantFrom(...([0, 1, 2, 3, 4] as SpanKind[])),
    startTime: hrTime,
    endTime: hrTime,
    attributes,
    dropped: fc.nat(300),
    events: fc.array(
      fc.record({
        name: text,
        time: hrTime,
        attributes: fc.option(attributes, { nil: undefined }),
        droppedAttributesCount: fc.option(fc.nat(200), { nil: undefined }),
      }),
      { maxLength: 2 },
    ),
    links: fc.array(
      fc.record({
        context: spanContext,
        attributes: fc.option(attributes, { nil: undefined }),
        droppedAttributesCount: fc.option(fc.nat(200), { nil: undefined }),
      }),
      { maxLength: 2 },
    ),
    status: fc.record({
      code: fc.constantFrom(SpanStatusCode.UNSET, SpanStatusCode.OK, SpanStatusCode.ERROR),
      message: fc.option(text, { nil: undefined }),
    }),
    resource: fc.constantFrom(...resources),
    scope: fc.constantFrom(...scopes),
  })
  .map(
    (s) =>
      ({
        name: s.name,
        kind: s.kind,
        spanContext: () => s.context,
        parentSpanContext: s.parent,
        startTime: s.startTime,
        endTime: s.endTime,
        status: s.status,
        attributes: s.attributes,
        links: s.links as Link[],
        events: s.events,
        duration: [0, 0],
        ended: true,
        resource: s.resource,
        instrumentationScope: s.scope,
        droppedAttributesCount: s.dropped,
        droppedEventsCount: 0,
        droppedLinksCount: s.links.length,
      }) as unknown as ReadableSpan,
  );

describe('the OTLP span encoder', () => {
  it('writes the bytes the OpenTelemetry serializer writes, for any spans', () => {
    fc.assert(
      fc.property(fc.array(span, { maxLength: 8 }), (spans) => {
        expect(Buffer.from(encodeSpans(spans)).equals(reference(spans))).toBe(true);
      }),
      { numRuns: 400 },
    );
  });

  it('writes the same bytes for the task spans the SDK makes, which the receiver reads back', () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'dsat-worker-stage1' }),
      spanProcessors: [new SimpleSpanProcessor(exporter)],
    });
    const tracer = provider.getTracer('dsat');
    for (let i = 0; i < 600; i++) {
      const facts = {
        taskId: `task-${i}`,
        pipeline: 'demo',
        stage: 'stage1',
        attempt: 1 + (i % 3),
      };
      const s = tracer.startSpan(SPAN_NAMES.process('stage1'), {
        kind: SpanKind.CONSUMER,
        attributes: taskAttributes({ ...facts, workerId: 'w-1' }, 'process'),
      });
      if (i % 2) s.setStatus({ code: SpanStatusCode.ERROR, message: 'handler threw' });
      s.end();
    }
    const spans = exporter.getFinishedSpans();
    const bytes = encodeSpans(spans);
    expect(Buffer.from(bytes).equals(reference(spans))).toBe(true);

    const decoded = otlpJsonFromProtobuf(bytes).resourceSpans![0]!.scopeSpans![0]!.spans!;
    expect(decoded).toHaveLength(600);
    expect(decoded[7]).toMatchObject({
      traceId: spans[7]!.spanContext().traceId,
      spanId: spans[7]!.spanContext().spanId,
      name: 'dsat.process stage1',
      status: { code: SpanStatusCode.ERROR, message: 'handler threw' },
    });
    expect(decoded[7]!.attributes).toContainEqual({
      key: 'dsat.task_id',
      value: { stringValue: 'task-7' },
    });
  });

  it('copies the attributes task spans share, as encoded once, only while they still hold', () => {
    const exporter = new InMemorySpanExporter();
    const recorder = new TaskSpanRecorder({
      resource: resources[0]!,
      scope: scopes[0]!,
      processors: [new SimpleSpanProcessor(exporter)],
      parentBased: true,
    });
    const facts: fc.Arbitrary<TaskSpanFacts> = fc.record(
      {
        taskId: fc.uuid(),
        pipeline: fc.constantFrom('demo', 'etl'),
        stage: fc.constantFrom('parse', 'hash'),
        attempt: fc.integer({ min: 1, max: 200 }),
        workerId: fc.constantFrom('w-1', 'wörker-2'),
        parentTaskId: fc.constantFrom('', 'a1.1.hash'),
      },
      { requiredKeys: ['taskId', 'pipeline'] },
    );
    // A handler may set or overwrite attributes after the start, shared ones too.
    const change = fc.option(
      fc.tuple(fc.constantFrom('dsat.stage', 'messaging.system', 'http.route', 'k'), text),
      { nil: undefined },
    );
    const started = fc.record({
      facts,
      operation: fc.constantFrom<TaskOperation>('send', 'receive', 'process'),
      change,
    });
    fc.assert(
      fc.property(fc.array(started, { minLength: 1, maxLength: 12 }), (list) => {
        exporter.reset();
        for (const { facts: f, operation, change: c } of list) {
          const s = recorder.start(
            SPAN_NAMES.process(f.stage ?? 'none'),
            SpanKind.CONSUMER,
            undefined,
            taskAttributes(f, operation),
            [],
            sharedTaskAttributes(f, operation),
          );
          if (c) s.setAttribute(c[0], c[1]);
          s.end();
        }
        const spans = exporter.getFinishedSpans();
        expect(Buffer.from(encodeSpans(spans)).equals(reference(spans))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('encodes no spans as an empty request', () => {
    expect(encodeSpans([])).toHaveLength(0);
    expect(reference([])).toHaveLength(0);
  });
});
