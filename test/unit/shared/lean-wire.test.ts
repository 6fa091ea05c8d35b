import { describe, expect, it } from '@jest/globals';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import { WatchEventsResponse } from '../../../gen/dsat/status/v1/status';
import {
  LeanBinaryReader,
  LeanBinaryWriter,
  readUint64Number,
} from '../../../services/shared/lean-wire';
import { transitionArbitrary } from '../../helpers/arbitraries';

const unsigned = fc.oneof(
  fc.nat({ max: 0xffffffff }),
  fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  fc.constantFrom(0, 127, 128, 2 ** 32 - 1, 2 ** 32, 2 ** 49 - 1, 2 ** 49, 2 ** 53 - 1),
);
const signed = fc.oneof(unsigned, fc.integer({ min: Number.MIN_SAFE_INTEGER, max: -1 }));

/** Each value written as uint64 and int64, by `writer`. */
function written(writer: BinaryWriter, values: readonly [number, number][]): Uint8Array {
  for (const [u, i] of values) writer.uint64(u).int64(i);
  return writer.finish();
}

describe('LeanBinaryWriter and LeanBinaryReader', () => {
  it("write the library's bytes and read back its numbers, for every safe integer", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(unsigned, signed), { maxLength: 20 }), (values) => {
        const bytes = written(new LeanBinaryWriter(), values);
        expect(Buffer.from(bytes)).toEqual(Buffer.from(written(new BinaryWriter(), values)));
        const fast = new LeanBinaryReader(bytes);
        const plain = new BinaryReader(bytes);
        for (const [u, i] of values) {
          expect(Number(fast.uint64())).toBe(u);
          expect(Number(fast.int64())).toBe(i);
          expect(Number(plain.uint64())).toBe(u);
          expect(Number(plain.int64())).toBe(i);
        }
        expect(fast.pos).toBe(bytes.length);
      }),
      { numRuns: 500 },
    );
  });

  it('decode generated messages as the plain reader does', () => {
    const feed = fc.record({
      transitions: fc.array(transitionArbitrary, { maxLength: 6 }),
      revision: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    });
    fc.assert(
      fc.property(feed, (m) => {
        const bytes = WatchEventsResponse.encode(m, new LeanBinaryWriter()).finish();
        expect(WatchEventsResponse.decode(new LeanBinaryReader(bytes))).toEqual(
          WatchEventsResponse.decode(bytes),
        );
      }),
      { numRuns: 200 },
    );
  });

  it('read every string as the library does, from a Buffer slice or a plain Uint8Array', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 80 }),
    );
    fc.assert(
      fc.property(fc.array(text, { maxLength: 12 }), fc.nat({ max: 7 }), (strings, offset) => {
        const w = new BinaryWriter();
        for (const t of strings) w.string(t);
        const bytes = w.finish();
        // grpc-js hands decoders a view into a larger buffer.
        const big = Buffer.alloc(offset + bytes.length + 3, 0xff);
        big.set(bytes, offset);
        const slice = big.subarray(offset, offset + bytes.length);
        for (const input of [slice, new Uint8Array(bytes)]) {
          const lean = new LeanBinaryReader(input);
          for (const t of strings) expect(lean.string()).toBe(t);
          expect(lean.pos).toBe(bytes.length);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('replace invalid UTF-8 as the library does, refuse a string cut short, and leave strict reads to it', () => {
    const bad = new Uint8Array([5, 0x61, 0xff, 0xc3, 0x28, 0x62]);
    expect(new LeanBinaryReader(bad).string()).toBe(new BinaryReader(bad).string());
    expect(() => new LeanBinaryReader(bad).string(true)).toThrow();
    expect(() => new LeanBinaryReader(new Uint8Array([9, 0x61])).string()).toThrow(/premature EOF/);
  });

  it('refuse a varint cut short, and a uint64 past 2^53 as a number', () => {
    const cut = new Uint8Array([0x80, 0x80]);
    expect(() => new LeanBinaryReader(cut).uint64()).toThrow();
    expect(() => new LeanBinaryReader(new Uint8Array([0xff])).int64()).toThrow();
    const huge = new BinaryWriter().uint64(2n ** 60n).finish();
    expect(new LeanBinaryReader(huge).uint64()).toBe(2n ** 60n);
    expect(() => readUint64Number(new LeanBinaryReader(huge))).toThrow(/MAX_SAFE_INTEGER/);
    expect(readUint64Number(new BinaryReader(new BinaryWriter().uint64(300).finish()))).toBe(300);
  });
});
