import type { Duration } from '../../gen/google/protobuf/duration';

/** A protobuf Duration in milliseconds (0 when unset; never negative). */
export function durationMs(d: Duration | undefined): number {
  if (!d) return 0;
  return Math.max(0, d.seconds * 1000 + Math.round(d.nanos / 1e6));
}

export function msToDuration(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: Math.round(ms % 1000) * 1e6 };
}
