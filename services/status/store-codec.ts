import {
  TaskState,
  type Payload,
  type Task,
  type TaskBranch,
  type TaskError,
  type TaskProgress,
} from '../../gen/dsat/task/v1/task';
import { ByteReader, type ByteWriter } from './byte-codec';
import { traceIdOf, type LogEntry } from './task-log';

/*
 * The key layout of the status LevelDB. Keys are UTF-8 strings with fixed-width hex numbers, so
 * key order is numeric order. Records and segments are binary (byte-codec.ts: ~5x faster to
 * encode than JSON here, which was faster than protobuf or msgpack); the small values are JSON.
 *
 *   m:schema                          {"format":2}             written once, at creation
 *   m:head                            [revision, newestLast]   every commit (the revision counter)
 *   f:<first>:<last>:<atMs>           segment                  ONE feed segment per commit
 *   u:<taskId>                        record                   a live task: the unfinished key
 *   t:<taskId>                        record                   a terminal task
 *   x:<state>:<endedAtMs>:<taskId>    [pipeline, version, stage, idempotencyKey]   once, at the end
 *   i:<idempotencyKey>                [taskId]                 once, at create
 *   p:<name>:<version>                Pipeline proto JSON      per saved version
 *
 * A live task's record lives under `u:` so that the unfinished key and the record are one put;
 * at the end it moves to `t:` (one put, one delete) with its `x:` index entry.
 */

export const FORMAT = 2;
export const SCHEMA_KEY = 'm:schema';
export const HEAD_KEY = 'm:head';
export const FEED = 'f:';
export const LIVE = 'u:';
export const DONE = 't:';
export const ENDED = 'x:';
export const IDEMPOTENCY = 'i:';
export const PIPELINE = 'p:';

/** The first key after every key that starts with `prefix`. */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

export function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

export interface SegmentKey {
  readonly first: number;
  readonly last: number;
  readonly atMs: number;
}

export function segmentKey(first: number, last: number, atMs: number): string {
  return `${FEED}${hex(first, 16)}:${hex(last, 16)}:${hex(atMs, 12)}`;
}

/** A bound that sorts after every segment whose first revision is ≤ `revision`. */
export function segmentSeekKey(revision: number): string {
  return `${FEED}${hex(revision, 16)};`;
}

export function parseSegmentKey(key: string): SegmentKey {
  const first = parseInt(key.slice(2, 18), 16);
  const last = parseInt(key.slice(19, 35), 16);
  const atMs = parseInt(key.slice(36), 16);
  if (!(first >= 1 && last >= first && atMs >= 0) || key.length !== 48) {
    throw new CorruptValueError(key, 'malformed feed segment key');
  }
  return { first, last, atMs };
}

export function endedKey(state: number, endedAtMs: number, taskId: string): string {
  return `${ENDED}${String(state).padStart(2, '0')}:${hex(endedAtMs, 12)}:${taskId}`;
}

export function endedPrefix(state: number): string {
  return `${ENDED}${String(state).padStart(2, '0')}:`;
}

export function parseEndedKey(key: string): { state: number; endedAtMs: number; taskId: string } {
  return {
    state: Number(key.slice(2, 4)),
    endedAtMs: parseInt(key.slice(5, 17), 16),
    taskId: key.slice(18),
  };
}

export function pipelineKey(name: string, version: number): string {
  return `${PIPELINE}${name}:${hex(version, 8)}`;
}

/** A value that does not decode: the store treats it as damage, naming the key. */
export class CorruptValueError extends Error {
  constructor(
    readonly key: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${key}: ${message}`, options);
    this.name = 'CorruptValueError';
  }
}

// ---- parts ----------------------------------------------------------------------------------

function writePayload(w: ByteWriter, p: Payload | undefined): void {
  if (p === undefined) return w.u8(0);
  w.u8(1);
  w.str(p.contentType);
  w.bytes(p.data);
}

function readPayload(r: ByteReader): Payload | undefined {
  if (r.u8() === 0) return undefined;
  const contentType = r.str();
  return { contentType, data: r.bytes() };
}

function writeError(w: ByteWriter, e: TaskError): void {
  w.str(e.code);
  w.str(e.message);
  w.u8(e.retryable ? 1 : 0);
  const keys = Object.keys(e.details);
  w.uint(keys.length);
  for (const k of keys) {
    w.str(k);
    w.str(e.details[k] as string);
  }
}

function readError(r: ByteReader): TaskError {
  const code = r.str();
  const message = r.str();
  const retryable = r.u8() === 1;
  const details: Record<string, string> = {};
  for (let n = r.uint(); n > 0; n--) {
    const k = r.str();
    // defineProperty keeps a key such as "__proto__" as data instead of setting the prototype.
    Object.defineProperty(details, k, {
      value: r.str(),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { code, message, retryable, details };
}

function writeProgress(w: ByteWriter, p: TaskProgress): void {
  w.f64(p.fraction);
  w.str(p.message);
  w.bytes(p.details);
}

function readProgress(r: ByteReader): TaskProgress {
  const fraction = r.f64();
  const message = r.str();
  return { fraction, message, details: r.bytes() };
}

/** A branch as a fan-out started it: its task id and stage (QUEUED at attempt 1 then). */
function writeBranches(w: ByteWriter, branches: readonly TaskBranch[]): void {
  w.uint(branches.length);
  for (const b of branches) {
    w.str(b.branchId);
    w.str(b.stage);
  }
}

function readBranches(r: ByteReader): TaskBranch[] {
  const out: TaskBranch[] = [];
  for (let n = r.uint(); n > 0; n--) {
    const branchId = r.str();
    out.push({ branchId, stage: r.str(), state: TaskState.TASK_STATE_QUEUED, attempt: 1 });
  }
  return out;
}

function decode<T>(key: string, what: string, value: Uint8Array, read: (r: ByteReader) => T): T {
  try {
    const r = new ByteReader(value);
    if (r.u8() !== FORMAT) throw new Error(`not format ${FORMAT}`);
    const out = read(r);
    if (!r.done) throw new Error('trailing bytes');
    return out;
  } catch (err) {
    if (err instanceof CorruptValueError) throw err;
    throw new CorruptValueError(key, `undecodable ${what}`, { cause: err });
  }
}

// ---- feed segments --------------------------------------------------------------------------

/** A feed entry names its task, since a segment holds many tasks' transitions. */
export interface FeedEntry {
  readonly taskId: string;
  readonly pipeline: string;
  readonly pipelineVersion: number;
  readonly traceId: string;
  /** The task whose fan-out started this one, '' for a submitted task. */
  readonly parentTaskId: string;
  readonly entry: LogEntry;
}

const HAS_ERROR = 1;
const HAS_PAYLOAD = 2;
const HAS_PROGRESS = 4;
const HAS_TOKEN = 8;
/** In a record's log: the payload is the record's output (the SUCCEEDED entry), stored once. */
const PAYLOAD_IS_OUTPUT = 16;
const HAS_BRANCHES = 32;
/** In a segment: the entry's task is a fan-out branch, and its parent's id follows. */
const HAS_PARENT = 64;

/**
 * A commit's transitions. Entries omit their revision (first + index) and time (the commit's),
 * which are in the key. Returns a view of `w`'s buffer: put it before encoding anything else.
 */
export function encodeSegment(w: ByteWriter, entries: readonly FeedEntry[]): Uint8Array {
  w.reset();
  w.u8(FORMAT);
  w.uint(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const f = entries[i] as FeedEntry;
    const e = f.entry;
    w.str(f.taskId);
    w.uint(e.seq);
    w.u8(e.from);
    w.u8(e.to);
    w.str(e.stage);
    w.uint(e.attempt);
    w.str(e.workerId);
    w.str(e.reason);
    w.str(e.transitionId);
    w.str(f.pipeline);
    w.uint(f.pipelineVersion);
    w.str(f.traceId);
    const flags =
      (e.error === undefined ? 0 : HAS_ERROR) |
      (e.payload === undefined ? 0 : HAS_PAYLOAD) |
      (e.progress === undefined ? 0 : HAS_PROGRESS) |
      (e.asyncToken === '' ? 0 : HAS_TOKEN) |
      (e.branches === undefined ? 0 : HAS_BRANCHES) |
      (f.parentTaskId === '' ? 0 : HAS_PARENT);
    w.u8(flags);
    if (e.error !== undefined) writeError(w, e.error);
    if (e.payload !== undefined) writePayload(w, e.payload);
    if (e.progress !== undefined) writeProgress(w, e.progress);
    if (e.asyncToken !== '') w.str(e.asyncToken);
    if (e.branches !== undefined) writeBranches(w, e.branches);
    if (f.parentTaskId !== '') w.str(f.parentTaskId);
  }
  return w.finish();
}

export function decodeSegment(key: string, value: Uint8Array): FeedEntry[] {
  const { first, last, atMs } = parseSegmentKey(key);
  return decode(key, 'feed segment', value, (r) => {
    const count = r.uint();
    if (count !== last - first + 1)
      throw new Error(`${count} entries for ${last - first + 1} revisions`);
    const out: FeedEntry[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const taskId = r.str();
      const seq = r.uint();
      const from = r.u8();
      const to = r.u8();
      const stage = r.str();
      const attempt = r.uint();
      const workerId = r.str();
      const reason = r.str();
      const transitionId = r.str();
      const pipeline = r.str();
      const pipelineVersion = r.uint();
      const traceId = r.str();
      const flags = r.u8();
      const error = flags & HAS_ERROR ? readError(r) : undefined;
      const payload = flags & HAS_PAYLOAD ? readPayload(r) : undefined;
      const progress = flags & HAS_PROGRESS ? readProgress(r) : undefined;
      const asyncToken = flags & HAS_TOKEN ? r.str() : '';
      const branches = flags & HAS_BRANCHES ? readBranches(r) : undefined;
      const parentTaskId = flags & HAS_PARENT ? r.str() : '';
      out[i] = {
        taskId,
        pipeline,
        pipelineVersion,
        traceId,
        parentTaskId,
        entry: {
          revision: first + i,
          seq,
          from,
          to,
          stage,
          attempt,
          workerId,
          reason,
          atMs,
          transitionId,
          error,
          payload,
          input: undefined,
          progress,
          asyncToken,
          branches,
        },
      };
    }
    return out;
  });
}

// ---- task records ---------------------------------------------------------------------------

export interface TaskRecord {
  readonly task: Task;
  /** The embedded prefix of the log: all of it for a terminal record. */
  readonly log: readonly LogEntry[];
  /** The revision of the first entry not embedded (it is in the feed), 0 when all are. */
  readonly tailFrom: number;
}

/**
 * A record is the fold of the task's log at its last milestone plus the first `embedded` entries
 * of that log (without progress, which the history does not carry). A live record embeds only what
 * an earlier terminal record or sweep checkpoint embedded: its newer entries are in the feed
 * segments from `tailFrom` on, so a milestone put does not rewrite the log. A terminal record
 * embeds the whole log, so the history and every transition id outlive the feed window.
 * Returns a view of `w`'s buffer: put it before encoding anything else.
 */
export function encodeRecord(
  w: ByteWriter,
  task: Task,
  log: readonly LogEntry[],
  embedded: number,
): Uint8Array {
  const t = task;
  w.reset();
  w.u8(FORMAT);
  w.str(t.taskId);
  w.str(t.pipeline);
  w.uint(t.pipelineVersion);
  w.str(t.stage);
  w.u8(t.state);
  w.uint(t.attempt);
  w.uint(t.seq);
  w.uint(t.revision);
  writePayload(w, t.input);
  writePayload(w, t.output);
  w.str(t.traceparent);
  if (t.lastError === undefined) w.u8(0);
  else {
    w.u8(1);
    writeError(w, t.lastError);
  }
  w.uint(t.createdAt?.getTime() ?? 0);
  w.uint(t.updatedAt?.getTime() ?? 0);
  w.int(t.priority);
  w.str(t.idempotencyKey);
  w.uint(t.hops);
  if (t.progress === undefined) w.u8(0);
  else {
    w.u8(1);
    writeProgress(w, t.progress);
  }
  w.str(t.asyncToken);
  w.str(t.workerId);
  w.uint(embedded < log.length ? (log[embedded] as LogEntry).revision : 0);
  w.uint(embedded);
  for (let i = 0; i < embedded; i++) {
    const e = log[i] as LogEntry;
    w.uint(e.revision);
    w.u8(e.to);
    w.str(e.stage);
    w.uint(e.attempt);
    w.str(e.workerId);
    w.str(e.reason);
    w.uint(e.atMs);
    w.str(e.transitionId);
    const output = e.payload !== undefined && e.payload === t.output;
    w.u8(
      (e.error === undefined ? 0 : HAS_ERROR) |
        (e.payload === undefined || output ? 0 : HAS_PAYLOAD) |
        (output ? PAYLOAD_IS_OUTPUT : 0) |
        (e.branches === undefined ? 0 : HAS_BRANCHES),
    );
    if (e.error !== undefined) writeError(w, e.error);
    if (e.payload !== undefined && !output) writePayload(w, e.payload);
    if (e.branches !== undefined) writeBranches(w, e.branches);
  }
  // Added after format 2's first records: a record that ends here has neither.
  writeBranches(w, t.branches);
  w.str(t.parentTaskId);
  return w.finish();
}

export function decodeRecord(key: string, value: Uint8Array): TaskRecord {
  return decode(key, 'task record', value, (r) => {
    const taskId = r.str();
    const pipeline = r.str();
    const pipelineVersion = r.uint();
    const stage = r.str();
    const state = r.u8();
    const attempt = r.uint();
    const seq = r.uint();
    const revision = r.uint();
    const input = readPayload(r);
    const output = readPayload(r);
    const traceparent = r.str();
    const lastError = r.u8() === 1 ? readError(r) : undefined;
    const createdAt = new Date(r.uint());
    const updatedAt = new Date(r.uint());
    const priority = r.int();
    const idempotencyKey = r.str();
    const hops = r.uint();
    const progress = r.u8() === 1 ? readProgress(r) : undefined;
    const asyncToken = r.str();
    const workerId = r.str();
    const tailFrom = r.uint();
    const embedded = r.uint();
    const task: Task = {
      taskId,
      pipeline,
      pipelineVersion,
      stage,
      state,
      attempt,
      seq,
      revision,
      input,
      output,
      traceId: traceIdOf(traceparent),
      traceparent,
      lastError,
      createdAt,
      updatedAt,
      priority,
      idempotencyKey,
      hops,
      branches: [],
      progress,
      asyncToken,
      workerId,
      parentTaskId: '',
    };
    const log: LogEntry[] = [];
    let from = 0;
    for (let i = 0; i < embedded; i++) {
      const entryRevision = r.uint();
      const to = r.u8();
      const entryStage = r.str();
      const entryAttempt = r.uint();
      const entryWorker = r.str();
      const reason = r.str();
      const atMs = r.uint();
      const transitionId = r.str();
      const flags = r.u8();
      const error = flags & HAS_ERROR ? readError(r) : undefined;
      const payload =
        flags & PAYLOAD_IS_OUTPUT ? output : flags & HAS_PAYLOAD ? readPayload(r) : undefined;
      const branches = flags & HAS_BRANCHES ? readBranches(r) : undefined;
      log.push({
        revision: entryRevision,
        seq: i + 1,
        from,
        to,
        stage: entryStage,
        attempt: entryAttempt,
        workerId: entryWorker,
        reason,
        atMs,
        transitionId,
        error,
        payload,
        input: undefined,
        progress: undefined,
        asyncToken: '',
        branches,
      });
      from = to;
    }
    if (!r.done) {
      task.branches = readBranches(r);
      task.parentTaskId = r.str();
    }
    if (embedded > seq || (tailFrom === 0) !== (embedded === seq)) {
      throw new Error(`${embedded} embedded entries, seq ${seq}, tail from ${tailFrom}`);
    }
    return { task, log, tailFrom };
  });
}

// ---- small values ---------------------------------------------------------------------------

/** The small values are JSON text, stored as bytes like everything else. */
export function jsonValue(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v), 'utf8');
}

export function parseJson(key: string, value: Uint8Array): unknown {
  try {
    return JSON.parse(
      Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8'),
    );
  } catch (err) {
    throw new CorruptValueError(key, 'undecodable JSON value', { cause: err });
  }
}

export type EndedIndexValue = [
  pipeline: string,
  version: number,
  stage: string,
  idempotencyKey: string,
];

export function encodeEnded(task: Task): Buffer {
  const v: EndedIndexValue = [task.pipeline, task.pipelineVersion, task.stage, task.idempotencyKey];
  return jsonValue(v);
}

export function decodeEnded(key: string, value: Uint8Array): EndedIndexValue {
  const v = parseJson(key, value);
  if (!Array.isArray(v) || v.length !== 4)
    throw new CorruptValueError(key, 'not an ended-index entry');
  return v as EndedIndexValue;
}
