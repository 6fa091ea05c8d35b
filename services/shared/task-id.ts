import { invalidArgument } from './errors';

/** Task ids become LevelDB keys: plain ASCII without the key separators' ambiguity. */
const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export function isTaskId(id: string): boolean {
  return TASK_ID.test(id);
}

/** The task id rule of every service, so a caller's bad id is refused where it first arrives. */
export function checkTaskId(taskId: string, field = 'task_id'): string {
  if (!TASK_ID.test(taskId)) throw invalidArgument(field, 'must be 1 to 128 of [A-Za-z0-9._:-]');
  return taskId;
}
