/**
 * Whether a handler's (or a hook's) return value is a promise to wait for, as `await` decides:
 * anything with a `then` method. A synchronous handler's plain value is used at once, with no
 * promise and no microtask per attempt.
 */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
