import fc from 'fast-check';
import type { Due } from '../../../services/tracker/deadlines';
import { createDeadlineScheduler } from '../../../services/tracker/deadlines';
import { systemClock } from '../../../services/tracker/monotonic-clock';

describe('the deadline scheduler', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function scheduler() {
    const fired: Due<number>[] = [];
    const s = createDeadlineScheduler<number>({
      clock: systemClock,
      onDue: (due) => fired.push(...due),
    });
    return { s, fired, at: (ms: number) => performance.now() + ms };
  }

  it('fires each key once, at its deadline, earliest first, ties in arm order', () => {
    const { s, fired, at } = scheduler();
    s.arm('c', at(300), 3);
    s.arm('a', at(100), 1);
    s.arm('b', at(100), 2);
    jest.advanceTimersByTime(99);
    expect(fired).toEqual([]);
    jest.advanceTimersByTime(1);
    expect(fired.map((d) => d.key)).toEqual(['a', 'b']);
    jest.advanceTimersByTime(200);
    expect(fired.map((d) => d.key)).toEqual(['a', 'b', 'c']);
    expect(s.size).toBe(0);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('moves a re-armed key and forgets a disarmed one', () => {
    const { s, fired, at } = scheduler();
    s.arm('a', at(100), 1);
    s.arm('b', at(200), 2);
    s.arm('a', at(500), 10);
    expect(s.disarm('b')).toBe(true);
    expect(s.disarm('b')).toBe(false);
    jest.advanceTimersByTime(499);
    expect(fired).toEqual([]);
    jest.advanceTimersByTime(1);
    expect(fired).toEqual([{ key: 'a', at: expect.any(Number), value: 10 }]);
  });

  it('moves its one timer earlier when an earlier deadline arrives', () => {
    const { s, fired, at } = scheduler();
    s.arm('late', at(10_000), 1);
    s.arm('soon', at(50), 2);
    expect(jest.getTimerCount()).toBe(1);
    jest.advanceTimersByTime(50);
    expect(fired.map((d) => d.key)).toEqual(['soon']);
    expect(s.nextAt()).toBeGreaterThan(performance.now());
  });

  it('waits out deadlines longer than setTimeout can hold (~24.8 days)', () => {
    const { s, fired, at } = scheduler();
    const forty = 40 * 86_400_000;
    s.arm('far', at(forty), 1);
    jest.advanceTimersByTime(forty - 1);
    expect(fired).toEqual([]);
    jest.advanceTimersByTime(1);
    expect(fired.map((d) => d.key)).toEqual(['far']);
  });

  it('fires nothing after stop', () => {
    const { s, fired, at } = scheduler();
    s.arm('a', at(10), 1);
    s.stop();
    jest.advanceTimersByTime(100);
    expect(fired).toEqual([]);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('fires exactly the keys armed last, in deadline order, for any mix of arm and disarm', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              op: fc.constant('arm' as const),
              key: fc.integer({ min: 0, max: 20 }),
              ms: fc.integer({ min: 0, max: 1_000 }),
            }),
            fc.record({ op: fc.constant('disarm' as const), key: fc.integer({ min: 0, max: 20 }) }),
          ),
          { maxLength: 200 },
        ),
        (ops) => {
          const { s, fired } = scheduler();
          const t0 = performance.now();
          const model = new Map<string, number>();
          for (const o of ops) {
            if (o.op === 'arm') {
              s.arm(String(o.key), t0 + o.ms, o.ms);
              model.set(String(o.key), o.ms);
            } else {
              s.disarm(String(o.key));
              model.delete(String(o.key));
            }
          }
          jest.advanceTimersByTime(1_000);
          s.stop();
          const expected = [...model.entries()].map(([key, ms]) => ({ key, ms }));
          expect(fired.map((d) => d.key).sort()).toEqual(expected.map((e) => e.key).sort());
          const times = fired.map((d) => d.at);
          expect(times).toEqual([...times].sort((a, b) => a - b));
          for (const d of fired) expect(d.value).toBe(model.get(d.key));
        },
      ),
      { numRuns: 200 },
    );
  });
});
