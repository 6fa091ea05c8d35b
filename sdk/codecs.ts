import type * as Msgpackr from 'msgpackr';
import type { Payload } from '../gen/dsat/task/v1/task';
import type { ContentType } from '../services/shared/content-types';
import { checkContentType, CONTENT_TYPES } from '../services/shared/content-types';
import { invalidArgument } from '../services/shared/errors';

/**
 * Payload codecs, chosen by content type. Every codec turns bytes into plain data only: JSON
 * values, strings, bytes, and msgpack without any extension type (msgpackr's extensions build
 * Dates, Errors, RegExps, Sets and typed arrays, so an extension byte is refused before decoding).
 * No codec that can run code on decode exists, and none can be registered.
 */
export interface Codec {
  readonly contentType: ContentType;
  encode(value: unknown): Buffer;
  decode(bytes: Uint8Array): unknown;
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function bytesOf(value: unknown, type: string): Buffer {
  if (value instanceof Uint8Array) return asBuffer(value);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  throw invalidArgument(
    'payload',
    `${type} takes bytes (a Uint8Array or Buffer), not ${typeof value}`,
  );
}

const json: Codec = {
  contentType: 'application/json',
  encode: (value) => Buffer.from(JSON.stringify(value === undefined ? null : value)),
  decode: (bytes) => JSON.parse(asBuffer(bytes).toString('utf8')) as unknown,
};

const text: Codec = {
  contentType: 'text/plain',
  encode: (value) => {
    if (typeof value !== 'string') {
      throw invalidArgument('payload', `text/plain takes a string, not ${typeof value}`);
    }
    return Buffer.from(value, 'utf8');
  },
  decode: (bytes) => asBuffer(bytes).toString('utf8'),
};

const octets: Codec = {
  contentType: 'application/octet-stream',
  encode: (value) => bytesOf(value, 'application/octet-stream'),
  decode: (bytes) => asBuffer(bytes),
};

/** Protobuf bytes pass through: the handler decodes them with its own generated type. */
const protobuf: Codec = {
  contentType: 'application/protobuf',
  encode: (value) => {
    if (value !== null && typeof value === 'object' && 'finish' in value) {
      return bytesOf((value as { finish(): Uint8Array }).finish(), 'application/protobuf');
    }
    return bytesOf(value, 'application/protobuf');
  },
  decode: (bytes) => asBuffer(bytes),
};

/** msgpackr (and its native addon) is loaded when a msgpack payload first meets a codec. */
let msgpackr: { packr: Msgpackr.Packr; unpackr: Msgpackr.Unpackr } | undefined;
function loadMsgpackr() {
  if (msgpackr === undefined) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Packr, Unpackr } = require('msgpackr') as typeof Msgpackr;
    msgpackr = {
      packr: new Packr({ useRecords: false, moreTypes: false, structuredClone: false }),
      unpackr: new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false }),
    };
  }
  return msgpackr;
}

const msgpack: Codec = {
  contentType: 'application/msgpack',
  encode: (value) => {
    const bytes = loadMsgpackr().packr.pack(value);
    try {
      assertPlainMsgpack(bytes);
    } catch {
      throw invalidArgument(
        'payload',
        'holds a value msgpack can only write as an extension type (a Date, Set, Error, RegExp or typed array); send plain data',
      );
    }
    return bytes;
  },
  decode: (bytes) => {
    assertPlainMsgpack(bytes);
    return loadMsgpackr().unpackr.unpack(bytes) as unknown;
  },
};

const CODECS: Record<ContentType, Codec> = {
  'application/json': json,
  'application/protobuf': protobuf,
  'application/msgpack': msgpack,
  'text/plain': text,
  'application/octet-stream': octets,
};

/** The codec of a content type; an unknown type is INVALID_ARGUMENT naming `content_type`. */
export function codecFor(contentType: string): Codec {
  return CODECS[checkContentType(contentType)];
}

export const KNOWN_CONTENT_TYPES: readonly string[] = CONTENT_TYPES;

export function encodePayload(value: unknown, contentType: string): Payload {
  const codec = codecFor(contentType);
  return { data: codec.encode(value), contentType: codec.contentType };
}

export function decodePayload(payload: Payload | undefined): unknown {
  if (payload === undefined) return undefined;
  return codecFor(payload.contentType).decode(payload.data);
}

/**
 * Walks msgpack bytes without building anything and throws on an extension type (fixext, ext 8,
 * 16, 32), on truncation, and on nesting deeper than 512. Plain msgpack only.
 */
export function assertPlainMsgpack(bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length;
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > end) throw new Error('msgpack: truncated payload');
  };
  // Values still to read at each open level.
  const stack: number[] = [1];
  while (stack.length > 0) {
    if (stack[stack.length - 1] === 0) {
      stack.pop();
      continue;
    }
    stack[stack.length - 1]!--;
    need(1);
    const b = bytes[pos++]!;
    let children = 0;
    if (b <= 0x7f || b >= 0xe0) {
      // fixint
    } else if (b <= 0x8f) children = (b & 0x0f) * 2;
    else if (b <= 0x9f) children = b & 0x0f;
    else if (b <= 0xbf) {
      need(b & 0x1f);
      pos += b & 0x1f;
    } else {
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xc4:
          need(1);
          pos += 1 + bytes[pos]!;
          break;
        case 0xc5:
          need(2);
          pos += 2 + view.getUint16(pos);
          break;
        case 0xc6:
          need(4);
          pos += 4 + view.getUint32(pos);
          break;
        case 0xca:
          pos += 4;
          break;
        case 0xcb:
          pos += 8;
          break;
        case 0xcc:
        case 0xd0:
          pos += 1;
          break;
        case 0xcd:
        case 0xd1:
          pos += 2;
          break;
        case 0xce:
        case 0xd2:
          pos += 4;
          break;
        case 0xcf:
        case 0xd3:
          pos += 8;
          break;
        case 0xd9:
          need(1);
          pos += 1 + bytes[pos]!;
          break;
        case 0xda:
          need(2);
          pos += 2 + view.getUint16(pos);
          break;
        case 0xdb:
          need(4);
          pos += 4 + view.getUint32(pos);
          break;
        case 0xdc:
          need(2);
          children = view.getUint16(pos);
          pos += 2;
          break;
        case 0xdd:
          need(4);
          children = view.getUint32(pos);
          pos += 4;
          break;
        case 0xde:
          need(2);
          children = view.getUint16(pos) * 2;
          pos += 2;
          break;
        case 0xdf:
          need(4);
          children = view.getUint32(pos) * 2;
          pos += 4;
          break;
        default:
          // 0xc1 (never used) and every extension: 0xc7-0xc9, 0xd4-0xd8.
          throw new Error(`msgpack: type 0x${b.toString(16)} (an extension) is not accepted`);
      }
    }
    if (pos > end) throw new Error('msgpack: truncated payload');
    if (children > 0) {
      if (children > end - pos) throw new Error('msgpack: truncated payload');
      if (stack.length >= 512) throw new Error('msgpack: nested too deeply');
      stack.push(children);
    }
  }
  if (pos !== end) throw new Error('msgpack: trailing bytes after the value');
}

export { CONTENT_TYPES };
