import { describe, expect, it } from '@jest/globals';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import { StatusServiceDefinition, WatchEventsResponse } from '../../../gen/dsat/status/v1/status';
import { Transition } from '../../../gen/dsat/task/v1/task';
import {
  KEPT_WRITER_BYTES,
  encodeMessage,
  withWireCodecs,
} from '../../../services/shared/message-codecs';
import { transitionArbitrary } from '../../helpers/arbitraries';

const feedMessage = fc.record({
  transitions: fc.array(transitionArbitrary, { maxLength: 8 }),
  revision: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
});

const fresh = (m: WatchEventsResponse) => WatchEventsResponse.encode(m).finish();

describe('encodeMessage', () => {
  it('gives the bytes of a fresh writer, message after message, and never changes bytes it gave', () => {
    fc.assert(
      fc.property(fc.array(feedMessage, { minLength: 1, maxLength: 6 }), (messages) => {
        const given = messages.map((m) => encodeMessage(WatchEventsResponse, m));
        given.forEach((bytes, i) =>
          expect(Buffer.from(bytes)).toEqual(Buffer.from(fresh(messages[i]!))),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('starts clean after an encode that failed half-way', () => {
    const bad = {
      transitions: [Transition.fromPartial({ taskId: 'a', attempt: -1 })],
      revision: 1,
    };
    expect(() => encodeMessage(WatchEventsResponse, bad)).toThrow();
    const good = { transitions: [Transition.fromPartial({ taskId: 'b' })], revision: 2 };
    expect(Buffer.from(encodeMessage(WatchEventsResponse, good))).toEqual(Buffer.from(fresh(good)));
  });

  it('encodes a message past the kept size whole, and the next one right', () => {
    const payload = { data: Buffer.alloc(KEPT_WRITER_BYTES + 1, 7), contentType: 'x' };
    const big = { transitions: [Transition.fromPartial({ taskId: 'big', payload })], revision: 3 };
    const small = { transitions: [Transition.fromPartial({ taskId: 's' })], revision: 4 };
    expect(Buffer.from(encodeMessage(WatchEventsResponse, big))).toEqual(Buffer.from(fresh(big)));
    expect(Buffer.from(encodeMessage(WatchEventsResponse, small))).toEqual(
      Buffer.from(fresh(small)),
    );
  });
});

describe('withWireCodecs', () => {
  it('keeps the definition, encoding through encodeMessage and decoding through decodeMessage', () => {
    const d = withWireCodecs(StatusServiceDefinition);
    expect(withWireCodecs(StatusServiceDefinition)).toBe(d);
    expect(d.fullName).toBe(StatusServiceDefinition.fullName);
    const method = d.methods.watchEvents;
    const m = { transitions: [Transition.fromPartial({ taskId: 't', stage: 's' })], revision: 9 };
    const bytes = method.responseType.encode(m).finish();
    expect(method.responseType.decode(bytes)).toEqual(m);
    expect(method.responseType.decode(new BinaryReader(bytes))).toEqual(m);
    expect(Object.keys(d.methods)).toEqual(Object.keys(StatusServiceDefinition.methods));
  });
});
