import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createLogger } from '../../services/shared/logger';
import type { OtlpReceiver } from '../../services/shared/otlp-receiver';
import { startOtlpReceiver } from '../../services/shared/otlp-receiver';
import type { StoredSpan } from '../../services/shared/span-store';
import { fromReadableSpan, SpanStore } from '../../services/shared/span-store';
import type { Telemetry } from '../../services/shared/telemetry';
import { startTelemetry } from '../../services/shared/telemetry';

/** OTLP span kinds and status codes, as StoredSpan has them. */
export const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;
export const STATUS = { unset: 0, ok: 1, error: 2 } as const;

/** The long-lived streams: none may have a span, let alone parent a task's span. */
export const STREAM_METHODS = [
  'dsat.router.v1.RouterService/ConnectWorker',
  'dsat.router.v1.RouterService/SubmitTasks',
  'dsat.router.v1.RouterService/ForwardTasks',
  'dsat.status.v1.StatusService/ApplyTransitions',
  'dsat.status.v1.StatusService/WatchEvents',
  'dsat.status.v1.StatusService/WatchTask',
];

/**
 * OpenTelemetry in the test process, through the same startTelemetry the services use (context
 * manager, W3C propagator, tracer provider), with every finished span kept in memory.
 */
export function startTestTracing(serviceName = 'dsat-test'): {
  spans(): StoredSpan[];
  telemetry: Telemetry;
} {
  const exporter = new InMemorySpanExporter();
  const telemetry = startTelemetry({
    serviceName,
    spanProcessors: [new SimpleSpanProcessor(exporter as SpanExporter)],
    env: {},
  });
  return {
    spans: () => exporter.getFinishedSpans().map((s: ReadableSpan) => fromReadableSpan(s)),
    telemetry,
  };
}

const taskIdOf = (s: StoredSpan) => s.attributes['dsat.task_id'];

/** The spans that carry `dsat.task_id`, by task. */
/**
 * An OTLP/HTTP receiver on a free port with the spans it received, and the OTEL_* variables that
 * make a dsat process export to it (`protocol` undefined: the exporters' default, protobuf).
 */
export async function startTraceSink(options: {
  protocol?: 'http/json';
  scheduleDelayMs: number;
}): Promise<{ receiver: OtlpReceiver; store: SpanStore; env: NodeJS.ProcessEnv }> {
  const store = new SpanStore(100_000);
  const receiver = await startOtlpReceiver(store, {
    host: '127.0.0.1',
    port: 0,
    logger: createLogger('test', 'silent'),
  });
  const env: NodeJS.ProcessEnv = {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: String(options.scheduleDelayMs),
  };
  if (options.protocol) env.OTEL_EXPORTER_OTLP_PROTOCOL = options.protocol;
  return { receiver, store, env };
}

export function spansByTask(spans: readonly StoredSpan[]): Map<string, StoredSpan[]> {
  const out = new Map<string, StoredSpan[]>();
  for (const s of spans) {
    const id = taskIdOf(s);
    if (typeof id !== 'string') continue;
    const list = out.get(id) ?? [];
    list.push(s);
    out.set(id, list);
  }
  return out;
}

export interface TaskTraceExpectation {
  readonly pipeline: string;
  /** Each stage the task must have passed, with a successful dispatch and process. */
  readonly stages: readonly string[];
  /**
   * Workers killed with -9: they lose the spans of the attempts they were running and those their
   * BatchSpanProcessor still held, so a dispatch to one of them may have no process span (and a
   * stage that ended on one may have no successful process span).
   */
  readonly lostWorkers?: readonly string[];
}

/** What one task's trace looks like, for the checks the tests add on top. */
export interface TaskTrace {
  readonly taskId: string;
  readonly traceId: string;
  readonly submit: StoredSpan | undefined;
  readonly dispatches: StoredSpan[];
  readonly processes: StoredSpan[];
  /** Every span of the trace, task spans and gRPC spans alike. */
  readonly all: StoredSpan[];
  readonly problems: string[];
}

const MESSAGING_REQUIRED = ['messaging.system', 'messaging.operation.type', 'messaging.message.id'];

/**
 * Checks one task's trace: a single trace id; one `dsat.submit` (PRODUCER); each
 * `dsat.dispatch <stage>` a child of the submit span; each `dsat.process <stage>` (CONSUMER) a
 * child of the dispatch of the same stage and attempt; the dsat.* and messaging.* attributes; no
 * span of a stream anywhere in the trace. `all` is every span of the run (other traces ignored).
 */
export function checkTaskTrace(
  all: readonly StoredSpan[],
  taskId: string,
  expectation: TaskTraceExpectation,
): TaskTrace {
  const problems: string[] = [];
  const mine = all.filter((s) => taskIdOf(s) === taskId);
  const traceIds = [...new Set(mine.map((s) => s.traceId))];
  if (traceIds.length !== 1) problems.push(`spans in ${traceIds.length} traces`);
  const traceId = traceIds[0] ?? '';
  const trace = all.filter((s) => s.traceId === traceId);
  const byId = new Map(trace.map((s) => [s.spanId, s]));
  const submits = mine.filter((s) => s.name === 'dsat.submit');
  const dispatches = mine.filter((s) => s.name.startsWith('dsat.dispatch '));
  const processes = mine.filter((s) => s.name.startsWith('dsat.process '));
  const submit = submits[0];
  const where = (s: StoredSpan) => `${s.name}#${String(s.attributes['dsat.attempt'] ?? '')}`;

  for (const s of trace) {
    if (STREAM_METHODS.includes(s.name)) problems.push(`a span of the stream ${s.name}`);
  }
  if (submits.length !== 1) problems.push(`${submits.length} dsat.submit spans`);
  if (submit && submit.kind !== KIND.producer) problems.push(`dsat.submit kind ${submit.kind}`);
  if (submit?.parentSpanId) {
    const parent = byId.get(submit.parentSpanId);
    // The submit may hang under the caller's SubmitTask spans; those are all it may hang under.
    if (parent && !parent.name.endsWith('/SubmitTask')) {
      problems.push(`dsat.submit is a child of ${parent.name}`);
    }
  }
  for (const s of mine) {
    const a = s.attributes;
    if (a['dsat.pipeline'] !== expectation.pipeline) problems.push(`${where(s)}: dsat.pipeline`);
    for (const k of MESSAGING_REQUIRED) {
      if (a[k] === undefined) problems.push(`${where(s)}: no ${k}`);
    }
    if (s === submit) continue;
    const stage = s.name.split(' ')[1];
    if (a['dsat.stage'] !== stage)
      problems.push(`${where(s)}: dsat.stage ${String(a['dsat.stage'])}`);
    if (a['messaging.destination.name'] !== stage) {
      problems.push(`${where(s)}: messaging.destination.name`);
    }
    if (typeof a['dsat.attempt'] !== 'number') problems.push(`${where(s)}: no dsat.attempt`);
    if (typeof a['dsat.worker_id'] !== 'string' || a['dsat.worker_id'] === '') {
      problems.push(`${where(s)}: no dsat.worker_id`);
    }
  }
  for (const d of dispatches) {
    if (!submit || d.parentSpanId !== submit.spanId) {
      const p = byId.get(d.parentSpanId);
      problems.push(`${where(d)}: parent is ${p ? p.name : `unknown ${d.parentSpanId}`}`);
    }
  }
  for (const p of processes) {
    if (p.kind !== KIND.consumer) problems.push(`${where(p)}: kind ${p.kind}`);
    const parent = dispatches.find((d) => d.spanId === p.parentSpanId);
    if (!parent) {
      const other = byId.get(p.parentSpanId);
      problems.push(`${where(p)}: parent is ${other ? other.name : `unknown ${p.parentSpanId}`}`);
    } else if (
      parent.attributes['dsat.attempt'] !== p.attributes['dsat.attempt'] ||
      parent.attributes['dsat.stage'] !== p.attributes['dsat.stage'] ||
      parent.attributes['dsat.worker_id'] !== p.attributes['dsat.worker_id']
    ) {
      problems.push(`${where(p)}: parent is the dispatch of another attempt or worker`);
    }
  }
  const stageOf = (s: StoredSpan) => s.attributes['dsat.stage'];
  const lost = (s: StoredSpan) =>
    (expectation.lostWorkers ?? []).includes(String(s.attributes['dsat.worker_id']));
  for (const stage of expectation.stages) {
    const mineAt = dispatches.filter((x) => stageOf(x) === stage);
    if (mineAt.length === 0) problems.push(`stage ${stage}: no dsat.dispatch`);
    const ok = processes.some((p) => stageOf(p) === stage && p.statusCode === STATUS.ok);
    if (!ok && !mineAt.some(lost)) problems.push(`stage ${stage}: no successful dsat.process`);
    for (const d of mineAt) {
      if (lost(d) || processes.some((p) => p.parentSpanId === d.spanId)) continue;
      problems.push(`${where(d)}: no dsat.process for this dispatch`);
    }
  }
  return { taskId, traceId, submit, dispatches, processes, all: trace, problems };
}

/** Checks every task; the problems of all of them, each prefixed with its task id. */
export function checkTaskTraces(
  all: readonly StoredSpan[],
  taskIds: Iterable<string>,
  expectation: TaskTraceExpectation,
): { traces: Map<string, TaskTrace>; problems: string[] } {
  const traces = new Map<string, TaskTrace>();
  const problems: string[] = [];
  for (const id of taskIds) {
    const t = checkTaskTrace(all, id, expectation);
    traces.set(id, t);
    for (const p of t.problems) problems.push(`${id}: ${p}`);
  }
  return { traces, problems };
}
