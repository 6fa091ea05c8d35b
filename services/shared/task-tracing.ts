import type { Attributes, Context, Link, Span, SpanContext, Tracer } from '@opentelemetry/api';
import type { TaskSpanRecorder } from './task-span';
import { parseTraceparent } from './traceparent';
import {
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api';

/**
 * The spans of a task. Each is parented by the task's stored traceparent, never by the call or
 * stream that happens to carry the task, so one trace follows a task across every stage and
 * process, and the long-lived worker stream is never a parent.
 */
export const SPAN_NAMES = {
  submit: 'dsat.submit',
  dispatch: (stage: string) => `dsat.dispatch ${stage}`,
  process: (stage: string) => `dsat.process ${stage}`,
} as const;

export function dsatTracer(): Tracer {
  return trace.getTracer('dsat');
}

const NO_SDK = new ProxyTracerProvider().getDelegate();

/**
 * Whether an OpenTelemetry SDK is registered in this process (by dsat, or by a handler's own
 * code). Without one, task spans are skipped altogether: as no-ops they still cost a traceparent
 * parse, id checks and an attributes object, several µs per span, on every task.
 */
export function taskTracingActive(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NO_SDK;
}

/** Makes task spans without the SDK's tracer (task-span.ts, loaded only when a process traces). */
let taskSpanMaker: TaskSpanRecorder | undefined;

/**
 * Set by dsat's telemetry with the SDK it started; undefined goes back to the SDK's tracer.
 * Returns the maker it replaces.
 */
export function useTaskSpanMaker(
  maker: TaskSpanRecorder | undefined,
): TaskSpanRecorder | undefined {
  const replaced = taskSpanMaker;
  taskSpanMaker = maker;
  return replaced;
}

/** The span task code holds while no SDK is registered: records nothing, has an invalid context. */
export const NO_TASK_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

export interface TaskSpanFacts {
  readonly taskId: string;
  readonly pipeline: string;
  readonly stage?: string;
  readonly attempt?: number;
  readonly workerId?: string;
  /** The task whose fan-out started this one, '' or absent for a submitted task. */
  readonly parentTaskId?: string;
}

export type TaskOperation = 'send' | 'receive' | 'process';

/**
 * The attributes that every span of one operation on one stage shares in a process (pipeline,
 * stage, operation, worker): the last `count` of a task span's attributes, in the same order each
 * time. The span encoder writes their bytes once and copies them into every span after
 * (otlp-span-encoder.ts); written anew per span, they were most of a task span's encoding.
 */
export interface SharedAttributes {
  readonly count: number;
  /** Their OTLP KeyValue fields as a span's attributes; set by the encoder on first use. */
  encoded: Uint8Array | undefined;
}

const sharedAttributes = new Map<string, SharedAttributes>();
/** Kinds of span remembered; past it (a process with thousands of stages), none is shared. */
const SHARED_ATTRIBUTES_MAX = 4096;

/** The attributes `taskAttributes` gives every span of this operation, stage and worker. */
export function sharedTaskAttributes(
  facts: TaskSpanFacts,
  operation: TaskOperation,
): SharedAttributes | undefined {
  // \u0001 stands for an absent stage or worker, which no name contains (names are checked).
  const key = `${operation}\u0000${facts.pipeline}\u0000${facts.stage ?? '\u0001'}\u0000${facts.workerId ?? '\u0001'}`;
  let shared = sharedAttributes.get(key);
  if (shared === undefined && sharedAttributes.size < SHARED_ATTRIBUTES_MAX) {
    const count = 4 + (facts.stage !== undefined ? 2 : 0) + (facts.workerId !== undefined ? 1 : 0);
    shared = { count, encoded: undefined };
    sharedAttributes.set(key, shared);
  }
  return shared;
}

/**
 * `dsat.*` attributes plus the OpenTelemetry messaging conventions: the task's own first, then
 * those shared by every span of its operation and stage (`sharedTaskAttributes`).
 */
export function taskAttributes(facts: TaskSpanFacts, operation: TaskOperation): Attributes {
  const a: Attributes = {
    'dsat.task_id': facts.taskId,
    'messaging.message.id': facts.taskId,
  };
  if (facts.attempt !== undefined) a['dsat.attempt'] = facts.attempt;
  if (facts.parentTaskId) a['dsat.parent_task_id'] = facts.parentTaskId;
  a['dsat.pipeline'] = facts.pipeline;
  a['messaging.system'] = 'dsat';
  a['messaging.operation.type'] = operation;
  a['messaging.operation.name'] = operation;
  if (facts.stage !== undefined) {
    a['dsat.stage'] = facts.stage;
    a['messaging.destination.name'] = facts.stage;
  }
  if (facts.workerId !== undefined) a['dsat.worker_id'] = facts.workerId;
  return a;
}

/**
 * The traceparent a task's next span hangs under: this span's own context, or undefined when it
 * has none (no SDK). A recording span's context is valid as made; only a non-recording one is
 * checked (by the API, with regular expressions). Read it before `end()`, which stops recording.
 */
export function spanTraceparent(span: Span): string | undefined {
  const sc = span.spanContext();
  return span.isRecording() || isSpanContextValid(sc) ? formatTraceparent(sc) : undefined;
}

export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** A context whose parent is the traceparent alone (ROOT otherwise), ignoring the active context. */
export function contextFromTraceparent(traceparent: string | undefined): Context {
  const sc = parseTraceparent(traceparent);
  return sc ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/**
 * Starts one of a task's spans under its traceparent, with the `dsat.*` and messaging attributes
 * of `facts`. With no tracer given and no SDK registered it returns NO_TASK_SPAN at once, before
 * any parse or attribute object.
 */
export function startTaskSpan(
  name: string,
  kind: SpanKind,
  parentTraceparent: string | undefined,
  facts: TaskSpanFacts,
  operation: TaskOperation,
  options: { readonly links?: Link[]; readonly tracer?: Tracer } = {},
): Span {
  if (!options.tracer) {
    if (taskSpanMaker) {
      return taskSpanMaker.start(
        name,
        kind,
        parseTraceparent(parentTraceparent),
        taskAttributes(facts, operation),
        options.links ?? [],
        sharedTaskAttributes(facts, operation),
      );
    }
    if (!taskTracingActive()) return NO_TASK_SPAN;
  }
  return (options.tracer ?? dsatTracer()).startSpan(
    name,
    { kind, attributes: taskAttributes(facts, operation), links: options.links ?? [] },
    contextFromTraceparent(parentTraceparent),
  );
}

/** Ends a span with OK, or ERROR and the error recorded. */
export function endTaskSpan(span: Span, error?: { code?: string; message: string }): void {
  if (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    span.setAttribute('error.type', error.code ?? 'error');
  } else {
    span.setStatus({ code: SpanStatusCode.OK });
  }
  span.end();
}

export { SpanKind };
