import type { TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import type { FieldViolation } from '../shared/errors';

/**
 * What a worker's progress and a task's error may carry: the status service's WRITE_LIMITS
 * (services/status/write-validation.ts), which keep a task record small enough for GetTask to
 * send. The router holds reports to them before it writes, so that the store never refuses a
 * report's write for its size; docs/protocol.md lists them.
 */
export const REPORT_LIMITS = {
  progressMessageChars: 1024,
  progressDetailsBytes: 64 * 1024,
  errorCodeChars: 128,
  errorMessageChars: 4096,
  errorDetailsBytes: 64 * 1024,
} as const;

const CONTROL = /\p{Cc}/u;

/** An error code: at most 128 characters, none of them control characters. */
export function isErrorCode(code: string): boolean {
  return code.length <= REPORT_LIMITS.errorCodeChars && !CONTROL.test(code);
}

/**
 * The bytes of a details map as the store counts them (keys, values and each entry's framing)
 * when over the limit, else undefined; a map that fits even at 3 bytes a character is not counted.
 */
function detailsOver(details: Record<string, string>): number | undefined {
  let units = 0;
  for (const k in details) units += 3 * (k.length + details[k]!.length) + 8;
  if (units <= REPORT_LIMITS.errorDetailsBytes) return undefined;
  let bytes = 0;
  for (const k in details) bytes += Buffer.byteLength(k) + Buffer.byteLength(details[k]!) + 8;
  return bytes > REPORT_LIMITS.errorDetailsBytes ? bytes : undefined;
}

/** The first limit a progress report breaks, its field under `root`; undefined if none. */
export function progressViolation(p: TaskProgress, root: string): FieldViolation | undefined {
  // Written so that NaN fails too.
  if (!(p.fraction >= 0 && p.fraction <= 1)) {
    return { field: `${root}.fraction`, description: `${p.fraction} is not a number from 0 to 1` };
  }
  if (p.message.length > REPORT_LIMITS.progressMessageChars) {
    return {
      field: `${root}.message`,
      description: `is ${p.message.length} characters, more than ${REPORT_LIMITS.progressMessageChars}`,
    };
  }
  if (p.details.length > REPORT_LIMITS.progressDetailsBytes) {
    return {
      field: `${root}.details`,
      description: `is ${p.details.length} bytes, more than ${REPORT_LIMITS.progressDetailsBytes}`,
    };
  }
  return undefined;
}

/** The first limit an error breaks, its field under `root`; undefined if none. */
export function errorViolation(e: TaskError, root: string): FieldViolation | undefined {
  if (!isErrorCode(e.code)) {
    return {
      field: `${root}.code`,
      description: `must be an identifier of at most ${REPORT_LIMITS.errorCodeChars} characters without control characters`,
    };
  }
  if (e.message.length > REPORT_LIMITS.errorMessageChars) {
    return {
      field: `${root}.message`,
      description: `is ${e.message.length} characters, more than ${REPORT_LIMITS.errorMessageChars}`,
    };
  }
  const bytes = detailsOver(e.details);
  if (bytes !== undefined) {
    return {
      field: `${root}.details`,
      description: `are ${bytes} bytes, more than ${REPORT_LIMITS.errorDetailsBytes}`,
    };
  }
  return undefined;
}

/** `text` cut to `chars` UTF-16 units, never between the halves of a surrogate pair. */
function cut(text: string, chars: number): string {
  if (text.length <= chars) return text;
  const last = text.charCodeAt(chars - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? chars - 1 : chars);
}

/**
 * A worker's Failure error held to the limits. The attempt has ended either way, so the failure is
 * taken rather than refused, as the protocol always cut a long code and message: a code that is
 * not an identifier becomes HANDLER_ERROR (the message quotes it), the message is cut, and details
 * over the limit are replaced by a note of their size. Retryability is the worker's.
 */
export function cutWorkerError(e: TaskError): TaskError {
  let code = e.code || 'HANDLER_ERROR';
  let message = e.message;
  if (!isErrorCode(code)) {
    message = `[error code ${JSON.stringify(cut(code, 64))} is not an identifier] ${message}`;
    code = 'HANDLER_ERROR';
  }
  const bytes = detailsOver(e.details);
  const details =
    bytes === undefined
      ? e.details
      : {
          dsat_details_dropped: `the worker's details were ${bytes} bytes, more than ${REPORT_LIMITS.errorDetailsBytes}`,
        };
  return {
    code,
    message: cut(message, REPORT_LIMITS.errorMessageChars),
    retryable: e.retryable,
    details,
  };
}
