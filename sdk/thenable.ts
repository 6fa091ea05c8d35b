/**
 * Whether a handler's (or a hook's) return value is a promise to wait for, as `await` decides:
 * anything with a `then` method.
 */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/**
 * Calls `run` and hands what it returned to `done`, or what it threw to `failed`: at once when it
 * returned a plain value or threw, when its promise settles otherwise. A synchronous handler's
 * attempt (and every hook around it) thus ends with no promise and no microtask.
 */
export function settle<T>(
  run: () => unknown,
  done: (value: unknown) => T,
  failed: (err: unknown) => T,
): T | Promise<T> {
  let out: unknown;
  try {
    out = run();
  } catch (err) {
    return failed(err);
  }
  return isThenable(out) ? Promise.resolve(out).then(done, failed) : done(out);
}
