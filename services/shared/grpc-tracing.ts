import type {
  CallContext,
  CallOptions,
  ClientMiddlewareCall,
  ServerMiddlewareCall,
} from 'nice-grpc-common';
import {
  openTelemetryClientMiddleware,
  openTelemetryServerMiddleware,
} from 'nice-grpc-opentelemetry';

/**
 * gRPC tracing, the one middleware for it (nice-grpc-opentelemetry; no grpc-js instrumentation):
 * a span per unary call, on both sides. Streams are not traced at all: ConnectWorker,
 * ApplyTransitions, ForwardTasks, WatchEvents/WatchTask and SubmitTasks live for minutes and carry
 * many tasks, so a stream span would be a parent nobody wants (and gather an event per message),
 * and a traceparent sent for a SubmitTasks stream would put all its tasks in one trace. Task spans
 * are parented by the task's stored traceparent only (task-tracing.ts).
 */
const traceServer = openTelemetryServerMiddleware();
const traceClient = openTelemetryClientMiddleware();

/**
 * Calls made on a timer, not for a user: each would be a trace of its own every few seconds,
 * burying the task traces and filling the span store of `dsat up`.
 */
const UNTRACED_METHODS = new Set([
  '/dsat.tracker.v1.TrackerService/Heartbeat',
  '/grpc.health.v1.Health/Check',
  '/grpc.health.v1.Health/Watch',
]);

/** Whether a call gets a span: unary calls made for a user. */
export function isTracedCall(call: {
  requestStream: boolean;
  responseStream: boolean;
  method: { path: string };
}): boolean {
  return !call.requestStream && !call.responseStream && !UNTRACED_METHODS.has(call.method.path);
}

export function tracingServerMiddleware<Req, Res>(
  call: ServerMiddlewareCall<Req, Res>,
  context: CallContext,
): AsyncGenerator<Res, Res | void, undefined> {
  return isTracedCall(call) ? traceServer(call, context) : call.next(call.request, context);
}

export function tracingClientMiddleware<Req, Res>(
  call: ClientMiddlewareCall<Req, Res>,
  options: CallOptions,
): AsyncGenerator<Res, Res | void, undefined> {
  return isTracedCall(call) ? traceClient(call, options) : call.next(call.request, options);
}
