import type { BackoffPolicy } from './stage-policy';

/**
 * The un-jittered wait after attempt `failedAttempt` (1-based) failed:
 * `initial × multiplier^(failedAttempt-1)`, capped at `max`.
 */
export function backoffBaseMs(policy: BackoffPolicy, failedAttempt: number): number {
  const exponent = Math.max(0, failedAttempt - 1);
  // Past the cap the power only grows; stop before it overflows to Infinity.
  const raw = policy.initialMs * Math.pow(policy.multiplier, Math.min(exponent, 1_000));
  return Math.min(policy.maxMs, Number.isFinite(raw) ? raw : policy.maxMs);
}

/** The bounds of the jittered wait: base × (1 ± jitter). */
export function backoffRangeMs(
  policy: BackoffPolicy,
  failedAttempt: number,
): { readonly min: number; readonly max: number } {
  const base = backoffBaseMs(policy, failedAttempt);
  return { min: base * (1 - policy.jitter), max: base * (1 + policy.jitter) };
}

/**
 * The wait before the attempt after `failedAttempt`: the capped exponential base with a uniform
 * jitter of ±`jitter` of it (so the cap itself is jittered too, and many tasks that failed
 * together do not come back together). `random` returns [0, 1).
 */
export function backoffDelayMs(
  policy: BackoffPolicy,
  failedAttempt: number,
  random: () => number = Math.random,
): number {
  const base = backoffBaseMs(policy, failedAttempt);
  return Math.max(0, base * (1 + policy.jitter * (2 * random() - 1)));
}
