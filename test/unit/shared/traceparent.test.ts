import fc from 'fast-check';
import { trace, TraceFlags } from '@opentelemetry/api';
import {
  formatTraceparent,
  NO_TASK_SPAN,
  spanTraceparent,
} from '../../../services/shared/task-tracing';
import { parseTraceparent, traceIdOf } from '../../../services/shared/traceparent';

/** The W3C rule as a regular expression: what parseTraceparent must accept, and nothing else. */
function byRegex(traceparent: string | undefined) {
  const m = traceparent
    ? /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent.trim())
    : null;
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16), isRemote: true };
}

const VALID = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const hexChar = fc.constantFrom(...'0123456789abcdef');
const hex = (n: number) => fc.string({ unit: hexChar, minLength: n, maxLength: n });
const nearlyValid = fc.oneof(
  fc.tuple(hex(32), hex(16), hex(2)).map(([t, s, f]) => `00-${t}-${s}-${f}`),
  fc
    .tuple(fc.nat(54), fc.constantFrom(...'0aAfgz-+ \u00e9'))
    .map(([i, c]) => VALID.slice(0, i) + c + VALID.slice(i + 1)),
  fc.constantFrom(
    ` ${VALID} `,
    `${VALID}\n`,
    '00-00000000000000000000000000000000-b7ad6b7169203331-01',
    '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
    VALID.toUpperCase(),
    `01${VALID.slice(2)}`,
    `ff${VALID.slice(2)}`,
    `0g${VALID.slice(2)}`,
    `${VALID}-extra`,
    '',
  ),
  fc.string({ maxLength: 60 }),
);

describe('parseTraceparent', () => {
  it('accepts exactly the W3C version 00 traceparents a regular expression accepts', () => {
    fc.assert(
      fc.property(nearlyValid, (tp) => {
        expect(parseTraceparent(tp)).toEqual(byRegex(tp));
      }),
      { numRuns: 5000 },
    );
    expect(parseTraceparent(undefined)).toBeUndefined();
  });

  it('traceIdOf takes any version but ff, unpadded, both ids not all zeros, as the W3C rule says', () => {
    const rule = (tp: string) => {
      const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(tp);
      return !m || m[1] === 'ff' || /^0+$/.test(m[2]!) || /^0+$/.test(m[3]!) ? undefined : m[2];
    };
    fc.assert(
      fc.property(nearlyValid, (tp) => {
        expect(traceIdOf(tp)).toBe(rule(tp));
      }),
      { numRuns: 5000 },
    );
    expect(traceIdOf(`01${VALID.slice(2)}`)).toBe(VALID.slice(3, 35));
  });

  it('reads back what formatTraceparent writes', () => {
    const sc = parseTraceparent(VALID)!;
    expect(formatTraceparent(sc)).toBe(VALID);
  });

  it('spanTraceparent gives a span’s own context, or nothing for the no-op span of an untraced process', () => {
    const sc = parseTraceparent(VALID)!;
    expect(spanTraceparent(trace.wrapSpanContext(sc))).toBe(VALID);
    const unsampled = { ...sc, traceFlags: TraceFlags.NONE };
    expect(spanTraceparent(trace.wrapSpanContext(unsampled))).toBe(`${VALID.slice(0, -2)}00`);
    expect(spanTraceparent(NO_TASK_SPAN)).toBeUndefined();
  });
});
