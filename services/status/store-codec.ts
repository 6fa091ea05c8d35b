import type { Payload, Task, TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import { DsatError, invalidArgument } from '../shared/errors';
import { traceIdOf, type LogEntry } from './task-log';

/*
 * The key layout of the status LevelDB (keys are UTF-8 strings, values compact JSON arrays,
 * measured faster to encode than protobuf or msgpack here; numbers are fixed-width hex so that
 * key order is numeric order):
 *
 *   m:schema                          {format}                 written once, at creation
 *   m:head                            [revision]               every commit (the revision counter)
 *   f:<first>:<last>:<atMs>           [1, entries]             ONE feed segment per commit
 *   u:<taskId>                        record                   a live task: the unfinished key
 *   t:<taskId>                        record                   a terminal task
 *   x:<state>:<endedAtMs>:<taskId>    [pipeline, version, stage, idempotencyKey]   once, at the end
 *   i:<idempotencyKey>                [taskId]                 once, at create
 *   p:<name>:<version>                Pipeline proto JSON      per saved version
 *
 * A live task's record lives under `u:` so that the unfinished key and the record are one put;
 * at the end it moves to `t:` (one put, one delete) with its `x:` index entry.
 */

export const FORMAT = 1;
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

// ---- small parts ----------------------------------------------------------------------------

type PayloadJson = [contentType: string, base64: string];
type ErrorJson = [
  code: string,
  message: string,
  retryable: 0 | 1,
  details?: Record<string, string>,
];
type ProgressJson = [fraction: number, message: string, base64: string];

/** ts-proto types bytes as Buffer, but fromPartial lets a plain Uint8Array through. */
function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

function payloadJson(p: Payload | undefined): PayloadJson | null {
  return p === undefined ? null : [p.contentType, base64(p.data)];
}

function payloadOf(j: unknown): Payload | undefined {
  if (j === null || j === undefined) return undefined;
  const [contentType, data] = j as PayloadJson;
  return { contentType, data: Buffer.from(data, 'base64') };
}

function errorJson(e: TaskError): ErrorJson {
  const hasDetails = Object.keys(e.details).length > 0;
  return hasDetails
    ? [e.code, e.message, e.retryable ? 1 : 0, e.details]
    : [e.code, e.message, e.retryable ? 1 : 0];
}

function errorOf(j: unknown): TaskError | undefined {
  if (j === null || j === undefined) return undefined;
  const [code, message, retryable, details] = j as ErrorJson;
  return { code, message, retryable: retryable === 1, details: details ?? {} };
}

function progressJson(p: TaskProgress | undefined): ProgressJson | null {
  return p === undefined ? null : [p.fraction, p.message, base64(p.details)];
}

function progressOf(j: unknown): TaskProgress | undefined {
  if (j === null || j === undefined) return undefined;
  const [fraction, message, details] = j as ProgressJson;
  return { fraction, message, details: Buffer.from(details, 'base64') };
}

// ---- feed segments --------------------------------------------------------------------------

/** A feed entry names its task, since a segment holds many tasks' transitions. */
export interface FeedEntry {
  readonly taskId: string;
  readonly pipeline: string;
  readonly pipelineVersion: number;
  readonly traceId: string;
  readonly entry: LogEntry;
}

interface EntryExtras {
  e?: ErrorJson;
  p?: PayloadJson;
  g?: ProgressJson;
  k?: string;
}

/** Segment entries omit revision (first + index) and time (the commit's, in the key). */
export function encodeSegment(entries: readonly FeedEntry[]): string {
  const rows: unknown[] = new Array(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const f = entries[i] as FeedEntry;
    const e = f.entry;
    const row: unknown[] = [
      f.taskId,
      e.seq,
      e.from,
      e.to,
      e.stage,
      e.attempt,
      e.workerId,
      e.reason,
      e.transitionId,
      f.pipeline,
      f.pipelineVersion,
      f.traceId,
    ];
    if (
      e.error !== undefined ||
      e.payload !== undefined ||
      e.progress !== undefined ||
      e.asyncToken !== ''
    ) {
      const x: EntryExtras = {};
      if (e.error !== undefined) x.e = errorJson(e.error);
      if (e.payload !== undefined) x.p = payloadJson(e.payload) as PayloadJson;
      if (e.progress !== undefined) x.g = progressJson(e.progress) as ProgressJson;
      if (e.asyncToken !== '') x.k = e.asyncToken;
      row.push(x);
    }
    rows[i] = row;
  }
  return JSON.stringify([FORMAT, rows]);
}

export function decodeSegment(key: string, value: string): FeedEntry[] {
  const { first, last, atMs } = parseSegmentKey(key);
  try {
    const [format, rows] = JSON.parse(value) as [number, unknown[][]];
    if (format !== FORMAT || !Array.isArray(rows) || rows.length !== last - first + 1) {
      throw new Error(`expected format ${FORMAT} with ${last - first + 1} entries`);
    }
    return rows.map((row, i) => {
      const [
        taskId,
        seq,
        from,
        to,
        stage,
        attempt,
        workerId,
        reason,
        transitionId,
        pipeline,
        version,
        traceId,
        x,
      ] = row as [
        string,
        number,
        number,
        number,
        string,
        number,
        string,
        string,
        string,
        string,
        number,
        string,
        EntryExtras?,
      ];
      if (typeof taskId !== 'string' || typeof seq !== 'number') throw new Error(`bad entry ${i}`);
      return {
        taskId,
        pipeline,
        pipelineVersion: version,
        traceId,
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
          error: errorOf(x?.e),
          payload: payloadOf(x?.p),
          input: undefined,
          progress: progressOf(x?.g),
          asyncToken: x?.k ?? '',
        },
      };
    });
  } catch (err) {
    if (err instanceof CorruptValueError) throw err;
    throw new CorruptValueError(key, 'undecodable feed segment', { cause: err });
  }
}

// ---- task records ---------------------------------------------------------------------------

export interface TaskRecord {
  readonly task: Task;
  /** The embedded prefix of the log: all of it for a terminal record. */
  readonly log: readonly LogEntry[];
  /** The revision of the first entry not embedded (it is in the feed), 0 when all are. */
  readonly tailFrom: number;
}

interface LogExtras {
  e?: ErrorJson;
  p?: PayloadJson;
  /** The payload is the record's output (the SUCCEEDED entry), stored once. */
  o?: 1;
}

/** The JSON of a log's first `count` entries, kept so that each entry is encoded only once. */
export interface EncodedLog {
  readonly count: number;
  readonly text: string;
}

export const EMPTY_LOG: EncodedLog = { count: 0, text: '' };

/**
 * A record is the fold of the task's log at its last milestone plus the first `embedded` entries
 * of that log (without progress, which the history does not carry). A live record embeds only what
 * an earlier terminal record or sweep checkpoint embedded: its newer entries are in the feed
 * segments from `tailFrom` on, so a milestone put does not rewrite the log. A terminal record
 * embeds the whole log, so the history and every transition id outlive the feed window.
 */
export function encodeRecord(
  task: Task,
  log: readonly LogEntry[],
  embedded: number,
  prefix: EncodedLog,
): { value: string; encoded: EncodedLog } {
  let text = prefix.text;
  if (embedded > prefix.count) {
    const rows: unknown[] = [];
    for (let i = prefix.count; i < embedded; i++) {
      const e = log[i] as LogEntry;
      const row: unknown[] = [
        e.revision,
        e.to,
        e.stage,
        e.attempt,
        e.workerId,
        e.reason,
        e.atMs,
        e.transitionId,
      ];
      if (e.error !== undefined || e.payload !== undefined) {
        const x: LogExtras = {};
        if (e.error !== undefined) x.e = errorJson(e.error);
        if (e.payload !== undefined) {
          if (e.payload === task.output) x.o = 1;
          else x.p = payloadJson(e.payload) as PayloadJson;
        }
        row.push(x);
      }
      rows.push(row);
    }
    // One stringify for the new rows: a flat string. Values built from many small pieces are
    // ropes that cost ~7 µs each to flatten when LevelDB copies them (measured).
    const fresh = JSON.stringify(rows).slice(1, -1);
    text = text === '' ? fresh : `${text},${fresh}`;
  }
  const fields = JSON.stringify([
    FORMAT,
    task.taskId,
    task.pipeline,
    task.pipelineVersion,
    task.stage,
    task.state,
    task.attempt,
    task.seq,
    task.revision,
    payloadJson(task.input),
    payloadJson(task.output),
    task.traceparent,
    task.lastError === undefined ? null : errorJson(task.lastError),
    task.createdAt?.getTime() ?? 0,
    task.updatedAt?.getTime() ?? 0,
    task.priority,
    task.idempotencyKey,
    task.hops,
    progressJson(task.progress),
    task.asyncToken,
    task.workerId,
    embedded < log.length ? (log[embedded] as LogEntry).revision : 0,
  ]);
  return {
    value: `${fields.slice(0, -1)},[${text}]]`,
    encoded: embedded === prefix.count ? prefix : { count: embedded, text },
  };
}

export function decodeRecord(key: string, value: string): TaskRecord {
  try {
    const r = JSON.parse(value) as unknown[];
    if (!Array.isArray(r) || r[0] !== FORMAT || r.length !== 23)
      throw new Error('not a format 1 record');
    const [
      ,
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
      traceparent,
      lastError,
      createdAtMs,
      updatedAtMs,
      priority,
      idempotencyKey,
      hops,
      progress,
      asyncToken,
      workerId,
      tailFrom,
      rows,
    ] = r as [
      number,
      string,
      string,
      number,
      string,
      number,
      number,
      number,
      number,
      unknown,
      unknown,
      string,
      unknown,
      number,
      number,
      number,
      string,
      number,
      unknown,
      string,
      string,
      number,
      unknown[][],
    ];
    const task: Task = {
      taskId,
      pipeline,
      pipelineVersion,
      stage,
      state,
      attempt,
      seq,
      revision,
      input: payloadOf(input),
      output: payloadOf(output),
      traceId: traceIdOf(traceparent),
      traceparent,
      lastError: errorOf(lastError),
      createdAt: new Date(createdAtMs),
      updatedAt: new Date(updatedAtMs),
      priority,
      idempotencyKey,
      hops,
      branches: [],
      progress: progressOf(progress),
      asyncToken,
      workerId,
    };
    let from = 0;
    const log = rows.map((row, i): LogEntry => {
      const [rev, to, st, att, worker, reason, atMs, transitionId, x] = row as [
        number,
        number,
        string,
        number,
        string,
        string,
        number,
        string,
        LogExtras?,
      ];
      const entry: LogEntry = {
        revision: rev,
        seq: i + 1,
        from,
        to,
        stage: st,
        attempt: att,
        workerId: worker,
        reason,
        atMs,
        transitionId,
        error: errorOf(x?.e),
        payload: x?.o === 1 ? task.output : payloadOf(x?.p),
        input: undefined,
        progress: undefined,
        asyncToken: '',
      };
      from = to;
      return entry;
    });
    if (log.length > seq || (tailFrom === 0) !== (log.length === seq)) {
      throw new Error(`${log.length} embedded entries, seq ${seq}, tail from ${tailFrom}`);
    }
    return { task, log, tailFrom };
  } catch (err) {
    throw new CorruptValueError(key, 'undecodable task record', { cause: err });
  }
}

// ---- small values ---------------------------------------------------------------------------

export type EndedIndexValue = [
  pipeline: string,
  version: number,
  stage: string,
  idempotencyKey: string,
];

export function encodeEnded(task: Task): string {
  const v: EndedIndexValue = [task.pipeline, task.pipelineVersion, task.stage, task.idempotencyKey];
  return JSON.stringify(v);
}

export function decodeEnded(key: string, value: string): EndedIndexValue {
  try {
    const v = JSON.parse(value) as EndedIndexValue;
    if (!Array.isArray(v) || v.length !== 4) throw new Error('not a 4-tuple');
    return v;
  } catch (err) {
    throw new CorruptValueError(key, 'undecodable ended-index entry', { cause: err });
  }
}

export function decodeHead(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = JSON.parse(value) as unknown;
  if (!Array.isArray(v) || typeof v[0] !== 'number')
    throw new CorruptValueError(HEAD_KEY, 'malformed head');
  return v[0];
}

// ---- page tokens ----------------------------------------------------------------------------

/** Page tokens are opaque to callers: base64url JSON with a kind tag checked on the way back. */
export function encodePageToken(kind: string, cursor: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify([kind, ...cursor])).toString('base64url');
}

export function decodePageToken(
  token: string,
  kind: string,
  field = 'page_token',
): (string | number)[] {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v[0] === kind) return v.slice(1) as (string | number)[];
  } catch {
    // fall through to the error below
  }
  throw invalidArgument(field, 'is not a token this list returned', 'INVALID_PAGE_TOKEN');
}

export function isCorruption(err: unknown): boolean {
  return (
    err instanceof CorruptValueError || (err instanceof DsatError && err.reason === 'STORE_DAMAGED')
  );
}
