import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { Transition } from '../../../gen/dsat/task/v1/task';
import { DsatError } from '../../../services/shared/errors';
import { protoFieldName } from '../../../services/shared/field-names';
import { compileTransitionMask } from '../../../services/status/transition-mask';
import { TIMER_FIELDS, TIMER_FIELD_MASK } from '../../../services/tracker/timer-feed';
import { transitionArbitrary } from '../../helpers/arbitraries';

const KEYS = Object.keys(Transition.fromPartial({})) as (keyof Transition)[];
const DEFAULTS = Transition.fromPartial({});

/** What a watcher decodes from the wire. */
const wire = (t: Transition) => Transition.decode(Transition.encode(t).finish());

function refusalOf(paths: string[]): DsatError {
  try {
    compileTransitionMask(paths);
  } catch (err) {
    expect(err).toBeInstanceOf(DsatError);
    return err as DsatError;
  }
  throw new Error(`${JSON.stringify(paths)} was accepted`);
}

describe('compileTransitionMask', () => {
  it('sends every field when the mask is unset, empty or names them all', () => {
    expect(compileTransitionMask(undefined)).toBeUndefined();
    expect(compileTransitionMask([])).toBeUndefined();
    expect(compileTransitionMask(KEYS.map(protoFieldName))).toBeUndefined();
  });

  it('sends the named fields as they are and the others unset, whatever the transition holds', () => {
    fc.assert(
      fc.property(
        transitionArbitrary,
        fc.subarray(KEYS, { minLength: 1, maxLength: KEYS.length - 1 }),
        (t, keys) => {
          const before = structuredClone(t);
          const projected = compileTransitionMask(keys.map(protoFieldName))!(t);
          const got = wire(projected);
          const full = wire(t);
          for (const key of KEYS) {
            expect(got[key]).toEqual(keys.includes(key) ? full[key] : DEFAULTS[key]);
          }
          expect(t).toEqual(before); // the stored transition is not touched
        },
      ),
      { numRuns: 500 },
    );
  });

  it('takes repeated paths once', () => {
    const project = compileTransitionMask(['task_id', 'task_id', 'stage'])!;
    const t = Transition.fromPartial({ taskId: 'a', stage: 's', attempt: 3 });
    expect(project(t)).toEqual({ ...DEFAULTS, taskId: 'a', stage: 's' });
  });

  it("keeps exactly the tracker's timer fields for the tracker's mask", () => {
    const project = compileTransitionMask(TIMER_FIELD_MASK)!;
    const timerFields: readonly string[] = TIMER_FIELDS;
    fc.assert(
      fc.property(transitionArbitrary, (t) => {
        const projected = project(t);
        for (const key of KEYS) {
          expect(projected[key]).toBe(timerFields.includes(key) ? t[key] : DEFAULTS[key]);
        }
      }),
    );
  });

  it('refuses a path that is not a Transition field, naming it and listing the fields', () => {
    const err = refusalOf(['task_id', 'nope']);
    expect(err).toMatchObject({ kind: 'INVALID_ARGUMENT', field: 'transition_mask.paths[1]' });
    expect(err.message).toMatch(/^transition_mask\.paths\[1\]: "nope" is not a Transition field/);
    expect(err.message).toContain('task_id, seq, from_state');
  });

  it('points a JSON-style name to its proto name', () => {
    expect(refusalOf(['toState']).message).toContain('did you mean "to_state"?');
  });

  it('refuses a path into a field, since a field is sent whole', () => {
    const err = refusalOf(['error.message']);
    expect(err.message).toMatch(
      /^transition_mask\.paths\[0\]: "error\.message" names a field inside/,
    );
    expect(err.message).toContain('"error" sends all of it');
  });
});
