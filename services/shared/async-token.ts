/**
 * The token an ASYNC stage waits for. It is derived from the attempt it belongs to, so a worker's
 * handler knows it before it returns (it hands it to the outside system that will answer with
 * CompleteAsync), and any router can find the task again from the token alone.
 *
 * Format: `<task_id>:<stage>:<attempt>` plus `:<branch_id>` for a fan-out branch.
 */
export interface AsyncTokenParts {
  readonly taskId: string;
  readonly stage: string;
  readonly attempt: number;
  readonly branchId: string;
}

export function asyncToken(parts: AsyncTokenParts): string {
  const base = `${parts.taskId}:${parts.stage}:${parts.attempt}`;
  return parts.branchId === '' ? base : `${base}:${parts.branchId}`;
}

/** The parts of a token, or undefined when it is not one. */
export function parseAsyncToken(token: string): AsyncTokenParts | undefined {
  const parts = token.split(':');
  if (parts.length !== 3 && parts.length !== 4) return undefined;
  const [taskId, stage, attemptText, branchId] = parts as [string, string, string, string?];
  const attempt = Number(attemptText);
  if (taskId === '' || stage === '' || !/^[1-9]\d{0,8}$/.test(attemptText)) return undefined;
  return { taskId, stage, attempt, branchId: branchId ?? '' };
}
