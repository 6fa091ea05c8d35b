import type { SpanContext } from '@opentelemetry/api';

/*
 * W3C traceparents (`<version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase,
 * ids not all zeros), read by hand rather than by regular expression: the router reads one per
 * task span and per submit, the status service one per record it decodes.
 */

/** 1 if s[from, to) is lowercase hex and not all zeros, 0 if all zeros, -1 if not lowercase hex. */
function hexRun(s: string, from: number, to: number): number {
  let nonZero = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 48) continue;
    if ((c > 48 && c <= 57) || (c >= 97 && c <= 102)) nonZero = 1;
    else return -1;
  }
  return nonZero;
}

const DASH = 45;

/** Whether `tp` has a traceparent's fields after its version, both ids valid. */
function validFields(tp: string): boolean {
  return (
    tp.length === 55 &&
    tp.charCodeAt(2) === DASH &&
    tp.charCodeAt(35) === DASH &&
    tp.charCodeAt(52) === DASH &&
    hexRun(tp, 3, 35) === 1 &&
    hexRun(tp, 36, 52) === 1 &&
    hexRun(tp, 53, 55) >= 0
  );
}

/**
 * The trace id of a valid traceparent of any version but the invalid `ff`, as a submitter or a
 * status writer may send; undefined otherwise.
 */
export function traceIdOf(traceparent: string): string | undefined {
  if (!validFields(traceparent) || hexRun(traceparent, 0, 2) < 0) return undefined;
  if (traceparent.startsWith('ff')) return undefined;
  return traceparent.slice(3, 35);
}

/**
 * The span context of a version-00 traceparent (surrounding whitespace allowed), which a task's
 * next span hangs under; undefined when it is missing or malformed.
 */
export function parseTraceparent(traceparent: string | undefined): SpanContext | undefined {
  if (!traceparent) return undefined;
  const tp = traceparent.length === 55 ? traceparent : traceparent.trim();
  if (tp.charCodeAt(0) !== 48 || tp.charCodeAt(1) !== 48 || !validFields(tp)) return undefined;
  return {
    traceId: tp.slice(3, 35),
    spanId: tp.slice(36, 52),
    traceFlags: parseInt(tp.slice(53), 16),
    isRemote: true,
  };
}
