import { invalidArgument } from './errors';

/**
 * The payload media types dsat knows. Each has a codec in sdk/codecs.ts, and none of them can run
 * code when decoded. A router refuses any other type, so a worker never gets bytes it cannot read.
 */
export const CONTENT_TYPES = [
  'application/json',
  'application/protobuf',
  'application/msgpack',
  'text/plain',
  'application/octet-stream',
] as const;
export type ContentType = (typeof CONTENT_TYPES)[number];

export const DEFAULT_CONTENT_TYPE: ContentType = 'application/octet-stream';

const KNOWN = new Set<string>(CONTENT_TYPES);
const ALIASES: Record<string, ContentType> = {
  'application/x-protobuf': 'application/protobuf',
  'application/x-msgpack': 'application/msgpack',
  'application/vnd.msgpack': 'application/msgpack',
};

/**
 * The known type a `content_type` names: parameters (`; charset=utf-8`) and case are ignored, and
 * empty means application/octet-stream. Undefined for an unknown type.
 */
export function knownContentType(raw: string): ContentType | undefined {
  if (raw === '') return DEFAULT_CONTENT_TYPE;
  if (KNOWN.has(raw)) return raw as ContentType;
  const semi = raw.indexOf(';');
  const base = (semi < 0 ? raw : raw.slice(0, semi)).trim().toLowerCase();
  if (base === '') return DEFAULT_CONTENT_TYPE;
  if (KNOWN.has(base)) return base as ContentType;
  return ALIASES[base];
}

/** Like knownContentType, but an unknown type is an INVALID_ARGUMENT naming `field`. */
export function checkContentType(raw: string, field = 'content_type'): ContentType {
  const t = knownContentType(raw);
  if (t === undefined) {
    throw invalidArgument(
      field,
      `${JSON.stringify(raw.slice(0, 100))} is not a known content type (${CONTENT_TYPES.join(', ')})`,
      'UNKNOWN_CONTENT_TYPE',
    );
  }
  return t;
}

/** Types whose empty encoding is not a value: an empty payload of these cannot be decoded. */
export function needsBytes(type: ContentType): boolean {
  return type === 'application/json' || type === 'application/msgpack';
}
