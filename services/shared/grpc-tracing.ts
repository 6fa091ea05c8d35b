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

const isStream = (call: { requestStream: boolean; responseStream: boolean }) =>
  call.requestStream || call.responseStream;

export function tracingServerMiddleware<Req, Res>(
  call: ServerMiddlewareCall<Req, Res>,
  context: CallContext,
): AsyncGenerator<Res, Res | void, undefined> {
  return isStream(call) ? call.next(call.request, context) : traceServer(call, context);
}

export function tracingClientMiddleware<Req, Res>(
  call: ClientMiddlewareCall<Req, Res>,
  options: CallOptions,
): AsyncGenerator<Res, Res | void, undefined> {
  return isStream(call) ? call.next(call.request, options) : traceClient(call, options);
}
