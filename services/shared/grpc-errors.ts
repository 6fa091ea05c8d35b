import type { CallContext, ServerMiddlewareCall } from 'nice-grpc-common';
import { ServerError, Status } from 'nice-grpc-common';
import { isAbortError } from 'abort-controller-x';
import { BadRequest, ErrorInfo, RichServerError } from 'nice-grpc-error-details';
import type { Logger } from './logger';
import { isDsatError } from './errors';

export const ERROR_DOMAIN = 'dsat';

/** Turns a domain error into the gRPC status a client sees, with ErrorInfo (and BadRequest). */
export function toServerError(err: unknown): ServerError | undefined {
  if (err instanceof ServerError) return err;
  if (!isDsatError(err)) return undefined;
  const details = [
    ErrorInfo.fromPartial({ reason: err.reason, domain: ERROR_DOMAIN, metadata: err.metadata }),
  ];
  if (err.violations.length > 0) {
    details.push(
      BadRequest.fromPartial({
        fieldViolations: err.violations.map((v) => ({
          field: v.field,
          description: v.description,
        })),
      }) as unknown as ErrorInfo,
    );
  }
  return new RichServerError(err.status, err.message, details);
}

/**
 * Maps errors thrown by handlers: domain errors to their status, anything unknown to INTERNAL
 * with the stack logged here and never sent.
 */
export function createErrorMiddleware(logger: Logger) {
  return async function* errorMiddleware<Req, Res>(
    call: ServerMiddlewareCall<Req, Res>,
    context: CallContext,
  ): AsyncGenerator<Res, Res | void, undefined> {
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      if (isAbortError(err) && context.signal.aborted) throw err;
      const mapped = toServerError(err);
      if (mapped) throw mapped;
      logger.error({ err, method: call.method.path }, 'unexpected error in handler');
      throw new ServerError(Status.INTERNAL, 'internal error; the server log has the details');
    }
  };
}

/** One log line per call at debug, with its duration and outcome. */
export function createLoggingMiddleware(logger: Logger) {
  return async function* loggingMiddleware<Req, Res>(
    call: ServerMiddlewareCall<Req, Res>,
    context: CallContext,
  ): AsyncGenerator<Res, Res | void, undefined> {
    if (!logger.isLevelEnabled('debug')) return yield* call.next(call.request, context);
    const start = process.hrtime.bigint();
    let code = 'OK';
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      code =
        err instanceof ServerError ? Status[err.code] : isAbortError(err) ? 'CANCELLED' : 'UNKNOWN';
      throw err;
    } finally {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      logger.debug({ method: call.method.path, peer: context.peer, code, ms }, 'call');
    }
  };
}
