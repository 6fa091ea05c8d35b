import type { CallContext, ServerMiddlewareCall } from 'nice-grpc-common';
import { ClientError, ServerError, Status } from 'nice-grpc-common';
import { isAbortError } from 'abort-controller-x';
import { BadRequest, ErrorInfo, RichClientError, RichServerError } from 'nice-grpc-error-details';
import type { Logger } from './logger';
import { isDsatError } from './errors';

export const ERROR_DOMAIN = 'dsat';

/*
 * An error travels in the response's trailers, which HTTP/2 caps at 64 KiB: a bigger one never
 * reaches the client (it sees UNAVAILABLE or its deadline). The message is sent percent-encoded
 * and the details base64-encoded, so these budgets keep the two well under the cap.
 */
const MAX_MESSAGE_BYTES = 8 * 1024;
const MAX_VIOLATION_BYTES = 16 * 1024;

/** `text` cut to at most `bytes` UTF-8 bytes, never inside a character, ending in "…" if cut. */
export function cutUtf8(text: string, bytes: number): string {
  // Three bytes a UTF-16 unit at most: short text needs no count.
  if (text.length * 3 <= bytes || Buffer.byteLength(text) <= bytes) return text;
  const buf = Buffer.from(text);
  let end = bytes - 3;
  // Back off continuation bytes (10xxxxxx) so the cut lands on a character's first byte.
  while (end > 0 && ((buf[end] as number) & 0xc0) === 0x80) end--;
  return `${buf.subarray(0, end).toString()}…`;
}

/**
 * What a service called on the caller's behalf answers when the request it passed on was at
 * fault: the caller gets the same answer, not an INTERNAL for its own mistake.
 */
const CALLER_FAULTS: ReadonlySet<Status> = new Set([
  Status.INVALID_ARGUMENT,
  Status.NOT_FOUND,
  Status.ALREADY_EXISTS,
  Status.FAILED_PRECONDITION,
  Status.OUT_OF_RANGE,
]);

/**
 * Turns a domain error into the gRPC status a client sees, with ErrorInfo (and BadRequest), and
 * a downstream call's refusal of the caller's input into that same refusal, details and all.
 */
export function toServerError(err: unknown): ServerError | undefined {
  if (err instanceof ServerError) return err;
  if (err instanceof ClientError && CALLER_FAULTS.has(err.code)) {
    return new RichServerError(
      err.code,
      err.details,
      err instanceof RichClientError ? err.extra : [],
    );
  }
  if (!isDsatError(err)) return undefined;
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(err.metadata)) metadata[k] = cutUtf8(v, 256);
  const details = [ErrorInfo.fromPartial({ reason: err.reason, domain: ERROR_DOMAIN, metadata })];
  if (err.violations.length > 0) {
    const fieldViolations: { field: string; description: string }[] = [];
    let budget = MAX_VIOLATION_BYTES;
    for (const v of err.violations) {
      const field = cutUtf8(v.field, 256);
      const description = cutUtf8(v.description, 1024);
      budget -= Buffer.byteLength(field) + Buffer.byteLength(description);
      if (budget < 0) break;
      fieldViolations.push({ field, description });
    }
    details.push(BadRequest.fromPartial({ fieldViolations }) as unknown as ErrorInfo);
  }
  return new RichServerError(err.status, cutUtf8(err.message, MAX_MESSAGE_BYTES), details);
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
