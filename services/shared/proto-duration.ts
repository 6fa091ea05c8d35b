import type { Duration } from '../../gen/google/protobuf/duration';

/** Milliseconds of a `google.protobuf.Duration`; an unset duration is 0 (no limit in dsat). */
export function durationMs(d: Duration | undefined): number {
  if (d === undefined) return 0;
  return d.seconds * 1000 + d.nanos / 1e6;
}

/** A `google.protobuf.Duration` of `ms` milliseconds (whole nanoseconds, signs agree). */
export function msDuration(ms: number): Duration {
  const totalNanos = Math.round(ms * 1e6);
  const seconds = Math.trunc(totalNanos / 1e9);
  return { seconds, nanos: totalNanos - seconds * 1e9 };
}

/** `1.5s`, `250ms`, `2m`, `1h`: the shortest exact unit, as pipeline files write durations. */
export function formatMs(ms: number): string {
  const units: [number, string][] = [
    [3_600_000, 'h'],
    [60_000, 'm'],
    [1000, 's'],
  ];
  for (const [size, unit] of units) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`;
}
