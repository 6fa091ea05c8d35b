import { invalidArgument } from './errors';

/**
 * Page tokens are the status service's (services/status/store-codec.ts): base64url JSON, an array
 * whose first element tags the list it belongs to. A service that passes a caller's token on
 * checks this shape first, so a token no list could have returned is the caller's INVALID_ARGUMENT
 * here; whether it belongs to this list is the status service's to say.
 */
export function checkPageToken(token: string, field = 'page_token'): string {
  if (token === '') return token;
  let v: unknown;
  try {
    v = /^[A-Za-z0-9_-]+$/.test(token)
      ? JSON.parse(Buffer.from(token, 'base64url').toString('utf8'))
      : undefined;
  } catch {
    v = undefined;
  }
  if (!Array.isArray(v) || typeof v[0] !== 'string') {
    throw invalidArgument(field, 'is not a token this list returned', 'INVALID_PAGE_TOKEN');
  }
  return token;
}
