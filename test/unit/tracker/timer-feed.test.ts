import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { WatchEventsResponse } from '../../../gen/dsat/status/v1/status';
import { Transition } from '../../../gen/dsat/task/v1/task';
import { TIMER_FIELDS, TimerFeedResponse } from '../../../services/tracker/timer-feed';
import { transitionArbitrary } from '../../helpers/arbitraries';

describe('the tracker feed (timer-feed.ts)', () => {
  it('decodes exactly the fields the timers read, as the generated decoder does, and leaves the rest at their defaults', () => {
    fc.assert(
      fc.property(
        fc.array(transitionArbitrary, { maxLength: 6 }),
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        (transitions, revision) => {
          const bytes = WatchEventsResponse.encode({ transitions, revision }).finish();
          const full = WatchEventsResponse.decode(bytes);
          const lean = TimerFeedResponse.decode(bytes);
          expect(lean.revision).toBe(full.revision);
          expect(lean.transitions).toHaveLength(full.transitions.length);
          const defaults = Transition.fromPartial({});
          lean.transitions.forEach((t, i) => {
            const want: Transition = { ...defaults };
            for (const f of TIMER_FIELDS) Object.assign(want, { [f]: full.transitions[i]![f] });
            expect(t).toEqual(want);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('skips fields it does not know, as a newer status service may send', () => {
    const known = Transition.encode({ ...Transition.fromPartial({ taskId: 'a', revision: 7 }) });
    // Field 99, length-delimited, then field 100, a varint: unknown to this build.
    const unknown = known
      .uint32((99 << 3) | 2)
      .string('later')
      .uint32((100 << 3) | 0)
      .uint64(5);
    const bytes = WatchEventsResponse.encode({ transitions: [], revision: 9 })
      .uint32(10)
      .bytes(unknown.finish())
      .finish();
    const lean = TimerFeedResponse.decode(bytes);
    expect(lean.revision).toBe(9);
    expect(lean.transitions).toEqual([expect.objectContaining({ taskId: 'a', revision: 7 })]);
  });
});
