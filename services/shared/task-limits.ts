import type { TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import type { FieldViolation } from './errors';

/**
 * What a task's progress and error may carry, so that its record always fits one reply (a 2 MB
 * error once made a task unreadable). The status service refuses writes past them; the router
 * holds workers' reports to them first, so the store never refuses a report's write for its size.
 * docs/protocol.md lists them.
 */
export const TASK_LIMITS = {
  progressMessageChars: 1024,
  progressDetailsBytes: 64 * 1024,
  errorCodeChars: 128,
  errorMessageChars: 4096,
  errorDetailsBytes: 64 * 1024,
  contentTypeChars: 256,
} as const;

const CONTROL = /\p{Cc}/u;

/** An error code: at most 128 characters, none of them control characters. */
export function isErrorCode(code: string): boolean {
  return code.length <= TASK_LIMITS.errorCodeChars && !CONTROL.test(code);
}

/**
 * The UTF-8 bytes of an error's details, each entry's framing counted too (so many tiny entries
 * cannot pass), when over the limit; undefined otherwise. A map that fits at 3 bytes a character
 * is not measured.
 */
export function errorDetailsOver(details: Record<string, string>): number | undefined {
  const max = TASK_LIMITS.errorDetailsBytes;
  let bound = 0;
  for (const key in details) bound += 3 * (key.length + (details[key] as string).length) + 8;
  if (bound <= max) return undefined;
  let bytes = 0;
  for (const key in details) {
    bytes += Buffer.byteLength(key) + Buffer.byteLength(details[key] as string) + 8;
  }
  return bytes > max ? bytes : undefined;
}

const tooLong = (field: string, length: number, max: number): FieldViolation => ({
  field,
  description: `is ${length} characters, more than ${max}`,
});

const tooLarge = (field: string, bytes: number, max: number): FieldViolation => ({
  field,
  description: `is ${bytes} bytes, more than ${max}`,
});

/** The first limit a progress report breaks, its field under `root`; undefined if none. */
export function progressViolation(p: TaskProgress, root: string): FieldViolation | undefined {
  // Written so that NaN fails too.
  if (!(p.fraction >= 0 && p.fraction <= 1)) {
    return { field: `${root}.fraction`, description: `${p.fraction} is not a number from 0 to 1` };
  }
  const L = TASK_LIMITS;
  if (p.message.length > L.progressMessageChars) {
    return tooLong(`${root}.message`, p.message.length, L.progressMessageChars);
  }
  if (p.details.length > L.progressDetailsBytes) {
    return tooLarge(`${root}.details`, p.details.length, L.progressDetailsBytes);
  }
  return undefined;
}

/** The first limit an error breaks, its field under `root`; undefined if none. */
export function errorViolation(e: TaskError, root: string): FieldViolation | undefined {
  const L = TASK_LIMITS;
  if (!isErrorCode(e.code)) {
    // Not UPPER_SNAKE only: workers send their error type's name, which non_retryable_errors lists.
    return {
      field: `${root}.code`,
      description: `must be an identifier of at most ${L.errorCodeChars} characters without control characters`,
    };
  }
  if (e.message.length > L.errorMessageChars) {
    return tooLong(`${root}.message`, e.message.length, L.errorMessageChars);
  }
  const bytes = errorDetailsOver(e.details);
  if (bytes !== undefined) return tooLarge(`${root}.details`, bytes, L.errorDetailsBytes);
  return undefined;
}

/** The first limit a payload's content type breaks; undefined if none. */
export function contentTypeViolation(
  contentType: string,
  field: string,
): FieldViolation | undefined {
  return contentType.length > TASK_LIMITS.contentTypeChars
    ? tooLong(field, contentType.length, TASK_LIMITS.contentTypeChars)
    : undefined;
}
