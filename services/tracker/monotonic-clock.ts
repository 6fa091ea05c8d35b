/**
 * The tracker's sense of time. Deadlines are measured on `monotonicMs` only, so a wall-clock jump
 * (NTP step, `faketime`, an operator's `date -s`) never moves a timeout. `wallMs` is used only to
 * estimate a record's age when timers are re-armed after a restart, and for timestamps shown to
 * people.
 */
export interface Clock {
  /** Milliseconds on a clock that never jumps and only moves forward. */
  monotonicMs(): number;
  /** Milliseconds since the Unix epoch, as the wall clock says. */
  wallMs(): number;
}

export const systemClock: Clock = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
};
