import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { assertPlainMsgpack, codecFor, decodePayload, encodePayload } from '../../../sdk/codecs';
import { DsatError } from '../../../services/shared/errors';

describe('payload codecs', () => {
  it('round-trips each content type', () => {
    const v = { a: [1, 'two', null, true], b: { c: 1.5 } };
    for (const t of ['application/json', 'application/msgpack']) {
      expect(decodePayload(encodePayload(v, t))).toEqual(v);
    }
    expect(decodePayload(encodePayload('héllo', 'text/plain'))).toBe('héllo');
    const bytes = Buffer.from([0, 1, 2, 255]);
    expect(decodePayload(encodePayload(bytes, 'application/octet-stream'))).toEqual(bytes);
    expect(decodePayload(encodePayload(bytes, 'application/protobuf'))).toEqual(bytes);
    expect(codecFor('application/json; charset=utf-8').contentType).toBe('application/json');
    expect(codecFor('').contentType).toBe('application/octet-stream');
  });

  it('refuses an unknown content type with INVALID_ARGUMENT naming content_type', () => {
    let err: unknown;
    try {
      codecFor('application/python-pickle');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DsatError);
    expect(err).toMatchObject({ kind: 'INVALID_ARGUMENT', field: 'content_type' });
  });

  it('refuses msgpack extension types, which would build objects (Date, Set, RegExp, Error, records)', () => {
    const rich = new Packr({ structuredClone: true, moreTypes: true });
    for (const v of [new Date(), new Set([1]), /a+/, new Error('x'), new Uint16Array(2)]) {
      const bytes = rich.pack({ v });
      expect(() => codecFor('application/msgpack').decode(bytes)).toThrow(/extension/);
    }
    const records = new Packr({ useRecords: true });
    expect(() => assertPlainMsgpack(records.pack([{ a: 1 }, { a: 2 }]))).toThrow(/extension/);
    expect(() => encodePayload({ when: new Date() }, 'application/msgpack')).toThrow(/extension/);
  });

  it('a "__proto__" key in JSON or msgpack sets no prototype', () => {
    const j = decodePayload({
      data: Buffer.from('{"__proto__":{"polluted":true}}'),
      contentType: 'application/json',
    }) as Record<string, unknown>;
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(j)).toBe(Object.prototype);
    const m = codecFor('application/msgpack').decode(
      new Packr({ useRecords: false }).pack(JSON.parse('{"__proto__":{"polluted":true}}')),
    ) as Record<string, unknown>;
    expect(Object.getPrototypeOf(m)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('never hangs or crashes on random msgpack bytes: decoded plain data or a thrown Error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          codecFor('application/msgpack').decode(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it('accepts every plain value msgpack can carry', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        // msgpackr renames a "__proto__" key so that decoding cannot set a prototype.
        fc.pre(!JSON.stringify(v).includes('"__proto__"'));
        const payload = encodePayload(v, 'application/msgpack');
        expect(decodePayload(payload)).toEqual(JSON.parse(JSON.stringify(v)));
      }),
      { numRuns: 500 },
    );
  });
});
