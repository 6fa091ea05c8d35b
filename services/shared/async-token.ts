/**
 * The token an ASYNC stage waits for. It is derived from the attempt it belongs to, so a worker's
 * handler knows it before it returns (it hands it to the outside system that will answer with
 * CompleteAsync), and any router can find the task again from the token alone.
 *
 * Format: `<task_id>:<stage>:<attempt>`. Stage names never hold a colon and attempts are digits,
 * so the token is read from its end: a task id may hold colons.
 */
export interface AsyncTokenParts {
  readonly taskId: string;
  readonly stage: string;
  readonly attempt: number;
}

export function asyncToken(parts: AsyncTokenParts): string {
  return `${parts.taskId}:${parts.stage}:${parts.attempt}`;
}

/** The parts of a token, or undefined when it is not one. */
export function parseAsyncToken(token: string): AsyncTokenParts | undefined {
  const m = /^(.+):([^:]+):([1-9]\d{0,8})$/.exec(token);
  if (m === null) return undefined;
  return { taskId: m[1] as string, stage: m[2] as string, attempt: Number(m[3]) };
}
