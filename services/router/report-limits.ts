import type { TaskError } from '../../gen/dsat/task/v1/task';
import { errorDetailsOver, isErrorCode, TASK_LIMITS } from '../shared/task-limits';

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
  const bytes = errorDetailsOver(e.details);
  const details =
    bytes === undefined
      ? e.details
      : {
          dsat_details_dropped: `the worker's details were ${bytes} bytes, more than ${TASK_LIMITS.errorDetailsBytes}`,
        };
  return {
    code,
    message: cut(message, TASK_LIMITS.errorMessageChars),
    retryable: e.retryable,
    details,
  };
}
