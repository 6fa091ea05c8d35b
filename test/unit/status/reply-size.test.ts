import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { Transition } from '../../../gen/dsat/task/v1/task';
import { bytesCeiling, itemBytes, transitionCeiling } from '../../../services/status/reply-size';
import { transitionArbitrary } from '../../helpers/arbitraries';

describe('transitionCeiling', () => {
  it('never counts fewer bytes than a transition takes in a reply, nor more than the generic bound', () => {
    fc.assert(
      fc.property(transitionArbitrary, (t) => {
        const encoded = itemBytes(Transition.encode(t).finish().byteLength);
        expect(transitionCeiling(t)).toBeGreaterThanOrEqual(encoded);
        expect(transitionCeiling(t)).toBeLessThanOrEqual(bytesCeiling(t) + 64);
      }),
      { numRuns: 1_000 },
    );
  });

  it('bounds the largest numbers and states the wire allows', () => {
    const t = Transition.fromPartial({
      revision: Number.MAX_SAFE_INTEGER,
      seq: Number.MAX_SAFE_INTEGER,
      fromState: -1,
      toState: -1,
      attempt: 2 ** 32 - 1,
      at: new Date(8.64e15),
      taskId: '\u{10FFFF}'.repeat(100),
    });
    expect(transitionCeiling(t)).toBeGreaterThanOrEqual(
      itemBytes(Transition.encode(t).finish().byteLength),
    );
  });
});
