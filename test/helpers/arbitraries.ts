import fc from 'fast-check';
import type { Transition } from '../../gen/dsat/task/v1/task';

/** Strings of any characters, multi-byte ones included. */
export const anyText = fc.string({ unit: 'grapheme', maxLength: 40 });

/** A feed transition with every field set or left out at random, in the ranges the wire allows. */
export const transitionArbitrary: fc.Arbitrary<Transition> = fc.record({
  revision: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  taskId: anyText,
  seq: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  fromState: fc.integer({ min: 0, max: 12 }),
  toState: fc.integer({ min: 0, max: 12 }),
  stage: anyText,
  attempt: fc.nat({ max: 2 ** 32 - 1 }),
  workerId: anyText,
  reason: anyText,
  at: fc.option(fc.date({ min: new Date(0), max: new Date(2 ** 42), noInvalidDate: true }), {
    nil: undefined,
  }),
  pipeline: anyText,
  traceId: anyText,
  error: fc.option(
    fc.record({
      code: anyText,
      message: anyText,
      retryable: fc.boolean(),
      details: fc.dictionary(fc.string({ maxLength: 8 }), anyText, { maxKeys: 3 }),
    }),
    { nil: undefined },
  ),
  payload: fc.option(
    fc.record({
      data: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      contentType: anyText,
    }),
    { nil: undefined },
  ),
  transitionId: anyText,
  parentTaskId: anyText,
});
