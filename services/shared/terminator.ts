import type { CallContext, ServerMiddleware, ServerMiddlewareCall } from 'nice-grpc-common';
import { ServerError, Status } from 'nice-grpc-common';

export interface TerminatorContext {
  /** Marks a call to be aborted when the server terminates (streaming calls are marked already). */
  abortOnTerminate(): void;
}

export type TerminatorMiddleware = ServerMiddleware<TerminatorContext> & {
  /** Aborts every marked call; they end with UNAVAILABLE. Call it right before `shutdown()`. */
  terminate(): void;
};

/**
 * Lets shutdown end long-lived streams: grpc-js `tryShutdown` never completes while a stream is
 * open (grpc-node#1458). Every streaming call is aborted on terminate; unary calls may finish.
 */
export function createTerminatorMiddleware(): TerminatorMiddleware {
  let terminated = false;
  const live = new Set<AbortController>();

  async function* terminator<Req, Res>(
    call: ServerMiddlewareCall<Req, Res, TerminatorContext>,
    context: CallContext,
  ): AsyncGenerator<Res, Res | void, undefined> {
    const inner = new AbortController();
    const forward = () => inner.abort();
    context.signal.addEventListener('abort', forward);
    const mark = () => {
      if (terminated) inner.abort();
      else live.add(inner);
    };
    if (call.requestStream || call.responseStream) mark();
    try {
      return yield* call.next(call.request, {
        ...context,
        signal: inner.signal,
        abortOnTerminate: mark,
      });
    } catch (err) {
      if (inner.signal.aborted && !context.signal.aborted) {
        throw new ServerError(Status.UNAVAILABLE, 'server shutting down');
      }
      throw err;
    } finally {
      context.signal.removeEventListener('abort', forward);
      live.delete(inner);
    }
  }

  return Object.assign(terminator, {
    terminate() {
      terminated = true;
      for (const c of live) c.abort();
      live.clear();
    },
  });
}
