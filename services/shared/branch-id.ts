import { createHash } from 'node:crypto';

/** The most branches one fan-out may start: a stage has at most this many next stages plus one. */
export const MAX_FAN_OUT = 64;

/**
 * The id of the branch task a fan-out starts: `<task>.<seq>.<stage>`, where `seq` is the task's
 * sequence number after the fan-out move, or a digest of the task id in its place when that would
 * pass 128 characters. The status service names branches with it; a router that wrote the move
 * knows them from the move's outcome alone.
 */
export function branchTaskId(taskId: string, seq: number, stage: string): string {
  const id = `${taskId}.${seq}.${stage}`;
  if (id.length <= 128) return id;
  return `${createHash('sha256').update(taskId).digest('hex').slice(0, 40)}.${seq}.${stage}`;
}
