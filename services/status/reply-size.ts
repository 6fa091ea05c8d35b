import { Task, Transition } from '../../gen/dsat/task/v1/task';

/*
 * Replies are cut to a byte budget under the gRPC max message size: five tasks with 1 MiB payloads
 * once made every ListUnfinishedTasks fail with RESOURCE_EXHAUSTED, so a router could never rebuild
 * its queues. A page stops before the item that would pass the budget and hands back a
 * next_page_token; it always holds at least one item, and the write limits keep one item (a task
 * record with its input and output) under the budget.
 */

/** The gRPC default, and dsat's (DSAT_MAX_MESSAGE_SIZE). */
export const DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024;

/** The bytes the items of one reply may take: the max message size less room for the rest. */
export function replyBudget(maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE): number {
  const headroom = Math.max(16 * 1024, Math.floor(maxMessageSize / 16));
  return Math.max(16 * 1024, maxMessageSize - headroom);
}

/**
 * What a task record holds besides its input and output, at most: progress and error within
 * TASK_LIMITS (~150 KiB), ids, names and a few hundred branches.
 */
const RECORD_ALLOWANCE = 256 * 1024;

/** The largest payload a write may carry: a record holds two (input and output) and must fit. */
export function maxPayloadBytes(budget: number): number {
  return Math.max(0, Math.floor((budget - RECORD_ALLOWANCE) / 2));
}

/** The bytes one item of `body` bytes adds to a repeated field: its tag, length and body. */
export function itemBytes(body: number): number {
  let lengthBytes = 1;
  for (let n = body; n >= 0x80; n = Math.floor(n / 0x80)) lengthBytes++;
  return 1 + lengthBytes + body;
}

/** The bytes a task adds to a reply, encoded as gRPC will encode it. */
export function taskBytes(t: Task): number {
  return itemBytes(Task.encode(t).finish().byteLength);
}

export function transitionBytes(t: Transition): number {
  return itemBytes(Transition.encode(t).finish().byteLength);
}

/** The end of the run of `items` from `start` whose bytes fit `budget`, past one item at least. */
export function fittingEnd<T>(
  items: readonly T[],
  start: number,
  budget: number,
  bytesOf: (item: T) => number,
): number {
  let used = 0;
  for (let i = start; i < items.length; i++) {
    used += bytesOf(items[i] as T);
    if (used > budget && i > start) return i;
  }
  return items.length;
}

/** A string field's bound: tag (2 bytes from field 16 on), length (5) and 3 UTF-8 bytes a char. */
const str = (s: string) => 7 + 3 * s.length;

/**
 * bytesCeiling of one feed transition, field by field: a watch sizes every transition it sends
 * with it (the tracker's feed is every transition of the mesh), and the generic walk took 113 ns
 * a transition here against 12. The five numbers get 11 bytes each (tag and a 10-byte varint),
 * the time 24, the item's own tag and length 6.
 */
export function transitionCeiling(t: Transition): number {
  let bytes = 6 + 5 * 11 + 24;
  bytes += str(t.taskId) + str(t.stage) + str(t.workerId) + str(t.reason) + str(t.pipeline);
  bytes += str(t.traceId) + str(t.transitionId) + str(t.parentTaskId);
  if (t.payload !== undefined) bytes += 12 + t.payload.data.length + str(t.payload.contentType);
  if (t.error !== undefined) bytes += 6 + bytesCeiling(t.error);
  return bytes;
}

/**
 * An upper bound of a message's encoded bytes, from the lengths of its fields alone: ~20x cheaper
 * than encoding it, for the watch path, where a message cut early costs only one more message.
 * Every field is counted with room for its tag and length, every character as 3 UTF-8 bytes.
 */
export function bytesCeiling(value: unknown): number {
  switch (typeof value) {
    case 'string':
      return 6 + 3 * value.length;
    case 'number':
    case 'bigint':
      return 11;
    case 'boolean':
      return 2;
    case 'object': {
      if (value === null) return 0;
      if (value instanceof Uint8Array) return 6 + value.length;
      if (value instanceof Date) return 24;
      let bytes = 6;
      if (Array.isArray(value)) {
        for (const item of value) bytes += 6 + bytesCeiling(item);
      } else {
        // A key is a field name (not sent) or a map key (sent): counted either way.
        const fields = value as Record<string, unknown>;
        for (const key in fields) bytes += 16 + 3 * key.length + bytesCeiling(fields[key]);
      }
      return bytes;
    }
    default:
      return 0;
  }
}
