import { invalidArgument } from './errors';

/**
 * Page tokens are the status service's, opaque to callers: base64url JSON, an array whose first
 * element tags the list it belongs to, the cursor after it.
 */
export function encodePageToken(kind: string, cursor: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify([kind, ...cursor])).toString('base64url');
}

/**
 * The cursor of a token of list `kind`; any list's when `kind` is undefined, for a service that
 * passes a caller's token on: a token no list could have returned is the caller's INVALID_ARGUMENT
 * there, and whether it belongs to that list is the status service's to say.
 */
export function decodePageToken(
  token: string,
  kind?: string,
  field = 'page_token',
): (string | number)[] {
  try {
    const v = /^[A-Za-z0-9_-]+$/.test(token)
      ? (JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown)
      : undefined;
    if (Array.isArray(v) && typeof v[0] === 'string' && (kind === undefined || v[0] === kind)) {
      return v.slice(1) as (string | number)[];
    }
  } catch {
    // fall through to the error below
  }
  throw invalidArgument(field, 'is not a token this list returned', 'INVALID_PAGE_TOKEN');
}

/** A caller's token to pass on, checked for its shape; '' (the first page) passes. */
export function checkPageToken(token: string, field = 'page_token'): string {
  if (token !== '') decodePageToken(token, undefined, field);
  return token;
}
