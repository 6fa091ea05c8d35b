import type { Attributes, Context, Link, Span, SpanContext, Tracer } from '@opentelemetry/api';
import {
  INVALID_SPAN_CONTEXT,
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

/** The span task code holds while no SDK is registered: records nothing, has an invalid context. */
export const NO_TASK_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

export interface TaskSpanFacts {
  readonly taskId: string;
  readonly pipeline: string;
  readonly stage?: string;
  readonly attempt?: number;
  readonly workerId?: string;
}

/** `dsat.*` attributes plus the OpenTelemetry messaging conventions. */
export type TaskOperation = 'send' | 'receive' | 'process';

export function taskAttributes(facts: TaskSpanFacts, operation: TaskOperation): Attributes {
  const a: Attributes = {
    'dsat.task_id': facts.taskId,
    'dsat.pipeline': facts.pipeline,
    'messaging.system': 'dsat',
    'messaging.operation.type': operation,
    'messaging.operation.name': operation,
    'messaging.message.id': facts.taskId,
  };
  if (facts.stage !== undefined) {
    a['dsat.stage'] = facts.stage;
    a['messaging.destination.name'] = facts.stage;
  }
  if (facts.attempt !== undefined) a['dsat.attempt'] = facts.attempt;
  if (facts.workerId !== undefined) a['dsat.worker_id'] = facts.workerId;
  return a;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Reads a W3C traceparent; undefined when it is missing or malformed. */
export function parseTraceparent(traceparent: string | undefined): SpanContext | undefined {
  const m = traceparent ? TRACEPARENT.exec(traceparent.trim()) : null;
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16), isRemote: true };
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
  if (!options.tracer && !taskTracingActive()) return NO_TASK_SPAN;
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
