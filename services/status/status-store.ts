import { Decorator, Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type {
  GetStoreStatsResponse,
  GetTaskHistoryResponse,
  ListPipelinesResponse,
  ListTasksResponse,
  ListUnfinishedTasksResponse,
  SavePipelineResponse,
  TransitionOutcome,
  TransitionWrite,
  WatchEventsResponse,
  WatchTaskResponse,
} from '../../gen/dsat/status/v1/status';
import {
  TaskState,
  type Task,
  type TaskBranch,
  type TaskFilter,
} from '../../gen/dsat/task/v1/task';
import { branchTaskId, MAX_FAN_OUT } from '../shared/branch-id';
import { DsatError, failedPrecondition, invalidArgument, notFound } from '../shared/errors';
import { assertValidPipeline } from '../shared/pipeline-validation';
import { ByteWriter } from './byte-codec';
import { FeedHub } from './feed-hub';
import {
  fittingEnd,
  itemBytes,
  maxPayloadBytes,
  replyBudget,
  taskBytes,
  transitionBytes,
} from './reply-size';
import { watchEvents, watchTask, type WatchSource } from './store-watch';
import type { TransitionProjection } from './transition-mask';
import {
  MATCH_ALL,
  compileFilter,
  filterMatches,
  isEmptyFilter,
  type CompiledFilter,
} from './task-filter';
import { decodePageToken, encodePageToken } from '../shared/page-token';
import { checkTaskId } from '../shared/task-id';
import {
  clampPage,
  defaultReason,
  edgeName,
  outcomeCode,
  pickMove,
  validateCreate,
  validateWrite,
} from './write-validation';
import {
  CorruptValueError,
  DONE,
  FEED,
  HEAD_KEY,
  IDEMPOTENCY,
  LIVE,
  decodeEnded,
  decodeRecord,
  encodeEnded,
  encodeRecord,
  encodeSegment,
  endedKey,
  endedPrefix,
  parseEndedKey,
  parseSegmentKey,
  pipelineKey,
  prefixEnd,
  segmentKey,
  jsonValue,
  parseJson,
  type FeedEntry,
} from './store-codec';
import { loadStore } from './store-load';
import { openLevel, writeMarker, type OpenedLevel, type StatusLevel } from './store-open';
import {
  foldEntry,
  foldEntryInto,
  liveRevOf,
  startTask,
  toTransition,
  type LogEntry,
  type TaskIdentity,
  type TaskSlot,
} from './task-log';
import { TERMINAL_STATES, checkTransition, isTerminalState, stateName } from './task-state-machine';

/*
 * The status store: the only writer of dsat's LevelDB (key layout in store-codec.ts).
 *
 * - Group commit: writes queue while a commit is in flight and all go into the next single
 *   atomic batch, one sync per commit; a lone write commits at once.
 * - Each commit writes ONE feed segment with all its transitions. A task record is put only at a
 *   milestone an acknowledgement depends on (create, stage done with the next input, terminal,
 *   redrive); DISPATCHED, RUNNING and progress live in the segment and in memory, and a restart
 *   folds them back onto the record from the feed (store-load.ts).
 * - Writes are applied to copies staged for the commit; the live cache, the revision and the
 *   watchers see them only after the batch is synced, so a failed batch changes nothing.
 * - The in-memory cache of live tasks is authoritative while the store runs (single writer).
 */

export interface StatusStoreOptions {
  /** The LevelDB directory. Created only when missing or empty. */
  readonly dir: string;
  /** fsync every commit (default true). Off survives a process crash, not a power loss. */
  readonly sync?: boolean;
  /** Run LevelDB's repair first and open what is left, reporting the losses (default false). */
  readonly repair?: boolean;
  /** Terminal tasks are deleted this long after they ended (default 7 days). */
  readonly retentionMs?: number;
  /** Feed segments older than this are swept (default 24 h); resumes before them are OUT_OF_RANGE. */
  readonly feedWindowMs?: number;
  /** Also sweep segments more than this many revisions behind the head (default 0 = no limit). */
  readonly feedWindowRevisions?: number;
  /** How often the retention sweep runs (default 60 s; 0 disables the timer, `sweep()` still works). */
  readonly sweepIntervalMs?: number;
  /** The most transitions buffered for one watcher before it falls back to reading the store. */
  readonly watchBufferSize?: number;
  /** An event watcher whose filter matches nothing is told its revision every this many revisions. */
  readonly watchProgressEvery?: number;
  /** LevelDB's write buffer (default 16 MiB; LevelDB's own 4 MiB flushes several times a second under load). */
  readonly writeBufferSize?: number;
  /** Retry the open this long while another process holds the lock (default 0: fail fast). */
  readonly lockWaitMs?: number;
  readonly signal?: AbortSignal;
  /** The wall clock, for tests (default Date.now). */
  readonly now?: () => number;
  /**
   * The bytes the items of one reply may take (default: replyBudget() of gRPC's 4 MiB). Pages stop
   * before it, and a write's payload is capped so that a task record always fits it.
   */
  readonly maxReplyBytes?: number;
  /**
   * Called once when LevelDB fails a write (a full disk, an I/O error). The store then refuses
   * every write; the process should stop, and its restart recovers (see `persist`).
   */
  readonly onFailure?: (error: DsatError) => void;
  /**
   * Most memory the unfinished tasks may take, counted as their payloads (inputs and outputs) plus
   * TASK_MEMORY_OVERHEAD each: all are kept in memory here and by the routers. A submit that would
   * pass it is refused with RESOURCE_EXHAUSTED, while tasks already in the mesh go on (default: no
   * limit).
   */
  readonly maxUnfinishedBytes?: number;
  /**
   * Told of every durable commit: its transitions, and the tasks it ended (for metrics). Called
   * after the store's state moved, before watchers hear of it; what it throws is ignored.
   */
  readonly onCommitted?: (entries: readonly FeedEntry[], ended: readonly Task[]) => void;
}

/** What opening found: a new store, a normal start, or a repair and what it lost. */
export interface OpenReport {
  readonly dir: string;
  readonly created: boolean;
  readonly repaired: boolean;
  readonly revision: number;
  readonly liveTasks: number;
  readonly feedStartRevision: number;
  /** Live tasks whose records were brought up to date from the feed after the last milestone. */
  readonly refoldedTasks: number;
  /** With repair: every loss found (files set aside, revision gaps, tasks with lost transitions). */
  readonly lost: readonly string[];
  /** With repair: tasks whose log has a gap; their records hold the state before it. */
  readonly damagedTasks: readonly string[];
}

export interface StoreStats extends GetStoreStatsResponse {
  /** Refusals by reason: STALE_ATTEMPT is in staleRefused, ILLEGAL_TRANSITION and STATE_MISMATCH in illegalRefused. */
  readonly stateMismatchRefused: number;
  readonly invalidRefused: number;
  readonly notFoundRefused: number;
  readonly feedStartRevision: number;
  /** What the unfinished tasks count against `maxUnfinishedBytes`. */
  readonly unfinishedBytes: number;
  /** The limit on `unfinishedBytes`; Infinity when there is none. */
  readonly maxUnfinishedBytes: number;
  readonly watchers: number;
  readonly lastSweepError: string;
}

export interface SweepReport {
  readonly segmentsDeleted: number;
  readonly recordsCheckpointed: number;
  readonly tasksDeleted: number;
}

/** Opens (or creates) the store, checking it first; see store-open.ts for the start-up rules. */
export async function openStatusStore(options: StatusStoreOptions): Promise<StatusStore> {
  const opened = await openLevel(options.dir, {
    repair: options.repair ?? false,
    lockWaitMs: options.lockWaitMs ?? 0,
    writeBufferSize: options.writeBufferSize ?? 16 * 1024 * 1024,
    signal: options.signal,
  });
  const store = new StatusStore(opened, options);
  try {
    await store.load();
  } catch (err) {
    await opened.db.close().catch(() => undefined);
    throw err;
  }
  return store;
}

interface Waiter {
  readonly writes: readonly TransitionWrite[];
  resolve(outcomes: TransitionOutcome[]): void;
  reject(err: unknown): void;
}

/** A task touched by the commit being built. */
interface Staged {
  slot: TaskSlot;
  /** `slot.log`, which this commit owns and appends to. */
  readonly log: LogEntry[];
  /** The state before this commit (published or read from disk); undefined for a create. */
  readonly before: TaskSlot | undefined;
  readonly wasLive: boolean;
  milestone: boolean;
  idempotencyKey: string;
}

type Loaded = TaskSlot | null | CorruptValueError;

/** Everything one group commit computes before its batch is written. Published only on success. */
class CommitBuild {
  readonly first: number;
  next: number;
  readonly staged = new Map<string, Staged>();
  readonly loaded = new Map<string, Loaded>();
  readonly idempotency = new Map<string, string>();
  readonly entries: FeedEntry[] = [];
  readonly refused = { stale: 0, mismatch: 0, illegal: 0, invalid: 0, notFound: 0, other: 0 };
  duplicates = 0;
  created = 0;
  /** The memory the tasks this commit creates are counted for. */
  createdBytes = 0;

  /** Every transition of a commit is recorded at the commit's time: one Date for all. */
  readonly at: Date;

  constructor(
    first: number,
    readonly atMs: number,
  ) {
    this.first = first;
    this.next = first;
    this.at = new Date(atMs);
  }
}

type Op = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };
type Batch = ReturnType<StatusLevel['batch']>;

const HOUR = 3_600_000;
/** The reason of a branch's first transitions, where a submitted task has SUBMITTED. */
const REASON_BRANCHED = 'FANNED_OUT';
const SWEEP_CHUNK = 2_000;
/** Most keys a commit reads on the event loop's thread (readMany). */
export const SYNC_READ_MAX = 1_024;

/**
 * The memory a live task takes here besides its payloads (its record, log and indexes): 300,000
 * queued tasks with 7-byte inputs took 630 MB over an idle service, 2.1 kB each.
 */
export const TASK_MEMORY_OVERHEAD = 2_048;

/** The memory a live task is counted for: its payloads and the overhead of its record. */
function memoryOf(task: Task): number {
  return (
    TASK_MEMORY_OVERHEAD + (task.input?.data.byteLength ?? 0) + (task.output?.data.byteLength ?? 0)
  );
}

/**
 * The write with its payload and progress details in buffers of their own. Decoded bytes are views
 * into the whole gRPC message: kept in a live task, one view held a message of hundreds of tasks
 * (40 live tasks of 2 kB held 41 MB, the 1 MB messages they came in).
 */
function ownBytes(w: TransitionWrite): TransitionWrite {
  const payload = w.payload;
  const details = w.progress?.details;
  const copyPayload = payload !== undefined && payload.data.byteLength > 0;
  const copyDetails = details !== undefined && details.byteLength > 0;
  if (!copyPayload && !copyDetails) return w;
  return {
    ...w,
    payload: copyPayload ? { ...payload, data: Buffer.from(payload.data) } : payload,
    progress: copyDetails ? { ...w.progress!, details: Buffer.from(details) } : w.progress,
  };
}

/** The bytes one put hands LevelDB: its key (UTF-8) and its value. */
function putBytes(key: string, value: Uint8Array): number {
  return Buffer.byteLength(key) + value.byteLength;
}

export class StatusStore {
  readonly dir: string;
  private readonly db: StatusLevel;
  private readonly sync: boolean;
  private readonly retentionMs: number;
  private readonly feedWindowMs: number;
  private readonly feedWindowRevisions: number;
  private readonly watchBufferSize: number;
  private readonly watchProgressEvery: number;
  private readonly now: () => number;
  private readonly hub = new FeedHub();
  /** The one buffer every record and segment is encoded into (single writer, one at a time). */
  private readonly scratch = new ByteWriter();
  private readonly live = new Map<string, TaskSlot>();
  private readonly pipelines = new Map<string, Pipeline[]>();
  /** The stages of every saved version, by `name@version`: a create checks its stage here. */
  private readonly stagesByVersion = new Map<string, ReadonlySet<string>>();
  private readonly decorators = new Map<string, readonly string[]>();
  private readonly opened: OpenedLevel;
  private report: OpenReport | undefined;

  private revision = 0;
  private feedStart = 1;
  private pending: Waiter[] = [];
  private readonly jobs: (() => Promise<void>)[] = [];
  private draining = false;
  private drained: (() => void)[] = [];
  private closed = false;
  private closing: Promise<void> | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly sweepIntervalMs: number;
  private readonly replyBudget: number;
  private readonly maxPayloadBytes: number;
  private lastSweepError = '';
  /** Set by the first write LevelDB failed; from then on nothing is written. */
  private failure: DsatError | undefined;
  /** The memory the live tasks are counted for (memoryOf), held in `live`. */
  private unfinishedBytes = 0;
  private readonly maxUnfinishedBytes: number;
  private readonly onFailure: ((error: DsatError) => void) | undefined;
  private readonly onCommitted: StatusStoreOptions['onCommitted'];
  private readonly counters = {
    commits: 0,
    transitions: 0,
    puts: 0,
    writtenBytes: 0,
    staleRefused: 0,
    illegalRefused: 0,
    stateMismatchRefused: 0,
    invalidRefused: 0,
    notFoundRefused: 0,
    duplicates: 0,
    tasksCreated: 0,
  };

  /** Use openStatusStore. */
  constructor(opened: OpenedLevel, options: StatusStoreOptions) {
    this.opened = opened;
    this.dir = opened.dir;
    this.db = opened.db;
    this.sync = options.sync ?? true;
    this.onFailure = options.onFailure;
    this.onCommitted = options.onCommitted;
    this.maxUnfinishedBytes = options.maxUnfinishedBytes ?? Number.POSITIVE_INFINITY;
    this.retentionMs = options.retentionMs ?? 7 * 24 * HOUR;
    this.feedWindowMs = options.feedWindowMs ?? 24 * HOUR;
    this.feedWindowRevisions = options.feedWindowRevisions ?? 0;
    this.sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.watchBufferSize = Math.max(1, options.watchBufferSize ?? 10_000);
    this.watchProgressEvery = Math.max(1, options.watchProgressEvery ?? 1_000);
    this.now = options.now ?? Date.now;
    this.replyBudget = options.maxReplyBytes ?? replyBudget();
    this.maxPayloadBytes = maxPayloadBytes(this.replyBudget);
    this.watchSource = {
      hub: this.hub,
      replyBudget: this.replyBudget,
      db: this.db,
      bufferSize: this.watchBufferSize,
      progressEvery: this.watchProgressEvery,
      revision: () => this.revision,
      feedStart: () => this.feedStart,
      readSlot: (taskId) => this.readSlot(taskId),
      snapshot: async (task) => (await this.withBranchesNow([task]))[0] as Task,
      matches: (f, fe) =>
        this.matchesParts(f, fe.entry.to, fe.pipeline, fe.pipelineVersion, fe.entry.stage),
      assertOpen: () => this.assertOpen(),
    };
  }

  get openReport(): OpenReport {
    if (this.report === undefined) throw new Error('the store is not loaded');
    return this.report;
  }

  // ---- writes ---------------------------------------------------------------------------------

  /**
   * Queues writes for the next group commit and answers them once that commit is synced. Writes
   * that arrive while a commit is in flight all go into the next one; nothing waits to fill a
   * batch. Refused writes get an outcome with a code and change nothing; a failed batch rejects
   * every write in it.
   */
  submit(writes: readonly TransitionWrite[]): Promise<TransitionOutcome[]> {
    if (this.closed) return Promise.reject(storeClosed(this.dir));
    if (this.failure) return Promise.reject(this.failure);
    if (writes.length === 0) return Promise.resolve([]);
    const owned = writes.map(ownBytes);
    return new Promise<TransitionOutcome[]>((resolve, reject) => {
      this.pending.push({ writes: owned, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.draining) return;
    this.draining = true;
    queueMicrotask(() => void this.drain());
  }

  private async drain(): Promise<void> {
    try {
      for (;;) {
        const job = this.jobs.shift();
        if (job !== undefined) {
          await job();
          continue;
        }
        if (this.pending.length === 0) break;
        const group = this.pending;
        this.pending = [];
        await this.commit(group);
      }
    } finally {
      this.draining = false;
      for (const done of this.drained.splice(0)) done();
    }
  }

  /** Runs `fn` between commits, so it sees no half-built commit and no commit sees it half done. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed && this.closing !== undefined) return Promise.reject(storeClosed(this.dir));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      this.jobs.push(() => fn().then(resolve, reject));
      this.kick();
    });
  }

  private async commit(group: Waiter[]): Promise<void> {
    if (this.failure) {
      for (const w of group) w.reject(this.failure);
      return;
    }
    const build = new CommitBuild(this.revision + 1, this.now());
    let outcomes: TransitionOutcome[][];
    try {
      await this.preload(group, build);
      outcomes = group.map((w) => w.writes.map((write) => this.apply(write, build)));
    } catch (err) {
      for (const w of group) w.reject(err);
      return;
    }
    if (build.entries.length > 0) {
      const batch = this.db.batch();
      let puts = 0;
      let bytes = 0;
      try {
        bytes = this.fill(build, batch);
        puts = batch.length;
        await this.persist(batch);
      } catch (err) {
        for (const w of group) w.reject(err);
        return;
      }
      this.publish(build, puts, bytes);
    }
    this.countRefusals(build);
    for (let i = 0; i < group.length; i++)
      (group[i] as Waiter).resolve(outcomes[i] as TransitionOutcome[]);
  }

  /** Reads, in one round trip, the records and idempotency keys the writes need from disk. */
  private async preload(group: readonly Waiter[], build: CommitBuild): Promise<void> {
    const keys: string[] = [];
    const seen = new Set<string>();
    for (const { writes } of group) {
      for (const w of writes) {
        if (w.taskId !== '' && !this.live.has(w.taskId) && !seen.has(DONE + w.taskId)) {
          seen.add(DONE + w.taskId);
          keys.push(DONE + w.taskId);
        }
        const key = w.create?.idempotencyKey ?? '';
        if (key !== '' && !seen.has(IDEMPOTENCY + key)) {
          seen.add(IDEMPOTENCY + key);
          keys.push(IDEMPOTENCY + key);
        }
      }
    }
    if (keys.length === 0) return;
    const values = await this.readMany(keys);
    const more: string[] = [];
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      const value = values[i];
      if (key.startsWith(DONE)) {
        build.loaded.set(key.slice(DONE.length), this.decodeSlot(key, value));
      } else if (value !== undefined) {
        const taskId = String((parseJson(key, value) as [string])[0]);
        build.idempotency.set(key.slice(IDEMPOTENCY.length), taskId);
        if (!this.live.has(taskId) && !seen.has(DONE + taskId)) {
          seen.add(DONE + taskId);
          more.push(DONE + taskId);
        }
      }
    }
    if (more.length === 0) return;
    const records = await this.readMany(more);
    more.forEach((key, i) =>
      build.loaded.set(key.slice(DONE.length), this.decodeSlot(key, records[i])),
    );
  }

  /**
   * Reads keys the commit being built needs. Up to SYNC_READ_MAX are read on this thread: mostly
   * misses (a new task's id), which LevelDB's Bloom filters answer in microseconds, where a trip
   * through libuv's pool (two thread wake-ups) took a commit's reads from 0.07 to 1 ms at the median
   * at 1,000 tasks/s, and at the 90th percentile from 2–4 to 8–10 ms in a T run.
   */
  private readMany(
    keys: string[],
  ): Promise<(Uint8Array | undefined)[]> | (Uint8Array | undefined)[] {
    if (keys.length > SYNC_READ_MAX) return this.db.getMany(keys);
    return keys.map((key) => this.db.getSync(key));
  }

  private decodeSlot(key: string, value: Uint8Array | undefined): Loaded {
    if (value === undefined) return null;
    try {
      const { task, log } = decodeRecord(key, value);
      if (log.length !== task.seq) {
        throw new CorruptValueError(
          key,
          `a terminal record embeds ${log.length} of ${task.seq} entries`,
        );
      }
      return { task, log, embedded: log.length, liveRev: liveRevOf(log) };
    } catch (err) {
      return err instanceof CorruptValueError ? err : new CorruptValueError(key, String(err));
    }
  }

  private current(taskId: string, build: CommitBuild): TaskSlot | undefined {
    const staged = build.staged.get(taskId);
    if (staged !== undefined) return staged.slot;
    const live = this.live.get(taskId);
    if (live !== undefined) return live;
    const loaded = build.loaded.get(taskId);
    if (loaded instanceof CorruptValueError) {
      throw new DsatError(
        'INTERNAL',
        'STORE_DAMAGED',
        `the record of task ${taskId} is damaged: ${loaded.message}`,
      );
    }
    return loaded ?? undefined;
  }

  private apply(w: TransitionWrite, build: CommitBuild): TransitionOutcome {
    try {
      validateWrite(w, this.maxPayloadBytes);
      return w.create === undefined ? this.applyMove(w, build) : this.applyCreate(w, build);
    } catch (err) {
      return this.refuse(w, err, build);
    }
  }

  private applyCreate(w: TransitionWrite, build: CommitBuild): TransitionOutcome {
    const create = w.create as NonNullable<TransitionWrite['create']>;
    validateCreate(w);
    const existing = this.current(w.taskId, build);
    if (existing !== undefined) {
      const dup = findTransition(existing.log, w.transitionId, TaskState.TASK_STATE_QUEUED);
      if (dup !== undefined) return this.duplicate(w, w.taskId, dup, build);
      throw failedPrecondition('TASK_EXISTS', `task ${w.taskId} already exists`, {
        task_id: w.taskId,
      });
    }
    const key = create.idempotencyKey;
    if (key !== '') {
      const firstId = build.idempotency.get(key);
      if (firstId !== undefined) {
        const first = this.current(firstId, build);
        const queued = first?.log[1];
        build.duplicates++;
        return ok(w.transitionId, firstId, queued?.revision ?? 0, queued?.seq ?? 0, true);
      }
    }
    this.checkPinnedStage(create.pipeline, create.pipelineVersion, w.stage);
    this.checkBacklogRoom(TASK_MEMORY_OVERHEAD + (w.payload?.data.byteLength ?? 0), build);
    const queued = this.stageNewTask(
      build,
      {
        taskId: w.taskId,
        pipeline: create.pipeline,
        pipelineVersion: create.pipelineVersion,
        traceparent: create.traceparent,
        priority: create.priority,
        idempotencyKey: key,
        parentTaskId: '',
        hops: 0,
      },
      w,
      w.stage,
      w.payload,
      w.reason === '' ? 'QUEUED' : w.reason,
    );
    if (key !== '') build.idempotency.set(key, w.taskId);
    return ok(w.transitionId, w.taskId, queued.revision, queued.seq, false);
  }

  /**
   * A submit is refused once the unfinished tasks would take more memory than the limit: they are
   * all in memory here and in the routers, and a backlog that outgrew memory would crash this
   * process at every start.
   */
  private checkBacklogRoom(size: number, build: CommitBuild): void {
    const held = this.unfinishedBytes + build.createdBytes;
    if (held + size > this.maxUnfinishedBytes) {
      throw new DsatError(
        'RESOURCE_EXHAUSTED',
        'BACKLOG_FULL',
        `the unfinished tasks take ${held} bytes of memory (payloads, and ${TASK_MEMORY_OVERHEAD} ` +
          `a task), and this one's ${size} would pass the ${this.maxUnfinishedBytes} allowed ` +
          '(--max-unfinished-bytes): retry once the backlog drains',
        { metadata: { limit: String(this.maxUnfinishedBytes), held: String(held) } },
      );
    }
    build.createdBytes += size;
  }

  /** A task nobody could run is not created: its pipeline version must be saved, with its stage. */
  private checkPinnedStage(pipeline: string, version: number, stage: string): void {
    const stages = this.stagesByVersion.get(`${pipeline}@${version}`);
    if (stages === undefined) {
      const [field, message] = this.pipelines.has(pipeline)
        ? ['create.pipeline_version', `pipeline ${pipeline} has no version ${version}`]
        : ['create.pipeline', `no pipeline ${pipeline} is saved`];
      throw new DsatError('NOT_FOUND', 'PIPELINE_NOT_FOUND', `${field}: ${message}`, {
        field,
        metadata: { pipeline, version: String(version) },
      });
    }
    if (!stages.has(stage)) {
      throw invalidArgument('stage', `${stage} is not a stage of pipeline ${pipeline}@${version}`);
    }
  }

  /**
   * A new task's SUBMITTED and QUEUED entries and its slot, staged in this commit: a create, or a
   * branch a fan-out starts. Returns the QUEUED entry.
   */
  private stageNewTask(
    build: CommitBuild,
    identity: TaskIdentity,
    w: TransitionWrite,
    stage: string,
    input: Task['input'],
    queuedReason: string,
  ): LogEntry {
    checkTransition(TaskState.TASK_STATE_UNSPECIFIED, TaskState.TASK_STATE_SUBMITTED);
    checkTransition(TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_QUEUED);
    const first = identity.parentTaskId === '' ? 'SUBMITTED' : REASON_BRANCHED;
    const submitted = entry(
      build,
      w,
      1,
      TaskState.TASK_STATE_UNSPECIFIED,
      TaskState.TASK_STATE_SUBMITTED,
      { stage, attempt: 1, reason: first },
    );
    const queued = entry(build, w, 2, TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_QUEUED, {
      stage,
      attempt: 1,
      reason: queuedReason,
    });
    const task = foldEntry(startTask(identity, submitted, input), queued);
    const slot: TaskSlot = {
      task,
      log: [submitted, queued],
      embedded: 0,
      liveRev: submitted.revision,
    };
    build.staged.set(identity.taskId, {
      slot,
      log: slot.log as LogEntry[],
      before: undefined,
      wasLive: false,
      milestone: true,
      idempotencyKey: identity.idempotencyKey,
    });
    build.entries.push(feedEntry(task, submitted), feedEntry(task, queued));
    build.created++;
    return queued;
  }

  /**
   * The branches a fan-out write starts, checked before anything is staged: one per further
   * stage, named by branchTaskId, so a branch id says where it came from and cannot meet a
   * submitted task's (a UUID).
   */
  private planBranches(
    w: TransitionWrite,
    task: Task,
    seq: number,
    nextStage: string,
    build: CommitBuild,
  ): TaskBranch[] {
    if (w.fanOutStages.length > MAX_FAN_OUT) {
      throw invalidArgument(
        'fan_out_stages',
        `names ${w.fanOutStages.length} stages, at most ${MAX_FAN_OUT}`,
      );
    }
    const seen = new Set([nextStage]);
    const branches: TaskBranch[] = [];
    for (const stage of w.fanOutStages) {
      if (seen.has(stage)) {
        throw invalidArgument(
          'fan_out_stages',
          `names stage ${stage} twice (the write's stage counts)`,
        );
      }
      seen.add(stage);
      const branchId = branchTaskId(task.taskId, seq, stage);
      if (this.current(branchId, build) !== undefined) {
        throw failedPrecondition('TASK_EXISTS', `branch task ${branchId} already exists`, {
          task_id: branchId,
        });
      }
      branches.push({ branchId, stage, state: TaskState.TASK_STATE_QUEUED, attempt: 1 });
    }
    return branches;
  }

  private applyMove(w: TransitionWrite, build: CommitBuild): TransitionOutcome {
    const cur = this.current(w.taskId, build);
    if (cur === undefined) throw notFound('task', w.taskId, 'task_id');
    const dup = findTransition(cur.log, w.transitionId, w.toState);
    if (dup !== undefined) return this.duplicate(w, w.taskId, dup, build);
    const task = cur.task;
    if (w.expectedState === TaskState.TASK_STATE_UNSPECIFIED) {
      throw invalidArgument('expected_state', 'is required on every write but a create');
    }
    if (w.expectedAttempt !== 0 && w.expectedAttempt !== task.attempt) {
      throw failedPrecondition(
        'STALE_ATTEMPT',
        `task ${task.taskId} is at attempt ${task.attempt}, the write names attempt ${w.expectedAttempt}`,
        { task_id: task.taskId, attempt: String(task.attempt) },
      );
    }
    if (w.expectedState !== task.state) {
      throw failedPrecondition(
        'STATE_MISMATCH',
        `task ${task.taskId} is ${stateName(task.state)}, the write expects ${stateName(w.expectedState)}`,
        { task_id: task.taskId, state: stateName(task.state) },
      );
    }
    const rule = checkTransition(task.state, w.toState);
    const sameStage = w.stage === '' || w.stage === task.stage;
    const move = pickMove(rule.moves, sameStage);
    if (move === undefined) {
      const edge = edgeName(task.state, w.toState);
      throw invalidArgument(
        'stage',
        sameStage
          ? `${edge} moves the task to its next stage; name it`
          : `${edge} stays at stage ${task.stage}`,
      );
    }
    const attempt =
      move === 'advance' || move === 'redrive'
        ? 1
        : move === 'retry'
          ? task.attempt + 1
          : task.attempt;
    if (w.attempt !== 0 && w.attempt !== attempt) {
      throw invalidArgument(
        'attempt',
        `${edgeName(task.state, w.toState)} (${move}) leaves the attempt at ${attempt}, not ${w.attempt}`,
      );
    }
    if (move === 'retry' && w.reason === '') {
      throw invalidArgument(
        'reason',
        `${edgeName(task.state, w.toState)} starts attempt ${attempt}; an extra attempt needs a reason`,
      );
    }
    if (w.toState === TaskState.TASK_STATE_WAITING && w.asyncToken === '') {
      throw invalidArgument('async_token', 'is required to wait for CompleteAsync');
    }
    if (
      w.toState === TaskState.TASK_STATE_RUNNING &&
      task.state === TaskState.TASK_STATE_RUNNING &&
      w.progress === undefined
    ) {
      throw invalidArgument(
        'progress',
        'a RUNNING → RUNNING checkpoint carries the progress it stores',
      );
    }
    if (w.fanOutStages.length > 0 && move !== 'advance') {
      throw invalidArgument(
        'fan_out_stages',
        `only a move to another stage fans out, not ${edgeName(task.state, w.toState)} (${move})`,
      );
    }
    const branches =
      w.fanOutStages.length === 0
        ? undefined
        : this.planBranches(w, task, task.seq + 1, w.stage, build);
    // A PUBLISH stage (QUEUED → QUEUED/SUCCEEDED) publishes its input and passes it on.
    const publishing =
      task.state === TaskState.TASK_STATE_QUEUED && (move === 'advance' || move === 'finish');
    const finished = w.toState === TaskState.TASK_STATE_SUCCEEDED;
    const e = entry(build, w, task.seq + 1, task.state, w.toState, {
      branches,
      stage: sameStage ? task.stage : w.stage,
      attempt,
      reason: w.reason === '' ? defaultReason(move, w.toState) : w.reason,
      payload: finished
        ? (w.payload ?? (publishing ? task.input : undefined))
        : publishing
          ? task.input
          : undefined,
      input: move === 'advance' ? (w.payload ?? (publishing ? task.input : undefined)) : undefined,
    });
    const milestone = move === 'advance' || move === 'redrive' || isTerminalState(w.toState);
    const liveRev = move === 'redrive' ? e.revision : cur.liveRev;
    const staged = build.staged.get(w.taskId);
    let next: Task;
    if (staged === undefined) {
      // First write to the task in this commit: copy what is published, once.
      next = foldEntry(task, e, build.at);
      const log = cur.log.slice();
      log.push(e);
      const slot = { task: next, log, embedded: cur.embedded, liveRev };
      build.staged.set(w.taskId, {
        slot,
        log,
        before: cur,
        wasLive: this.live.has(w.taskId),
        milestone,
        idempotencyKey: '',
      });
    } else {
      // The staged copies are this commit's own until it is published.
      next = foldEntryInto(staged.slot.task, e, build.at);
      staged.log.push(e);
      if (liveRev !== staged.slot.liveRev) staged.slot = { ...staged.slot, liveRev };
      staged.milestone ||= milestone;
    }
    build.entries.push(feedEntry(next, e));
    if (branches !== undefined) {
      // A branch's first entries carry the write's id, not its worker, error or progress.
      const start: TransitionWrite = {
        ...w,
        workerId: '',
        error: undefined,
        progress: undefined,
        asyncToken: '',
      };
      for (const b of branches) {
        this.stageNewTask(
          build,
          {
            taskId: b.branchId,
            pipeline: next.pipeline,
            pipelineVersion: next.pipelineVersion,
            traceparent: next.traceparent,
            priority: next.priority,
            idempotencyKey: '',
            parentTaskId: next.taskId,
            hops: next.hops,
          },
          start,
          b.stage,
          e.input,
          'QUEUED',
        );
      }
    }
    return ok(w.transitionId, w.taskId, e.revision, e.seq, false);
  }

  private duplicate(
    w: TransitionWrite,
    taskId: string,
    e: LogEntry,
    build: CommitBuild,
  ): TransitionOutcome {
    build.duplicates++;
    return ok(w.transitionId, taskId, e.revision, e.seq, true);
  }

  private refuse(w: TransitionWrite, err: unknown, build: CommitBuild): TransitionOutcome {
    const known = err instanceof DsatError;
    const reason = known ? err.reason : 'INTERNAL';
    const code = known ? outcomeCode(err) : 13;
    if (reason === 'STALE_ATTEMPT') build.refused.stale++;
    else if (reason === 'STATE_MISMATCH') build.refused.mismatch++;
    else if (reason === 'ILLEGAL_TRANSITION') build.refused.illegal++;
    else if (code === 3) build.refused.invalid++;
    else if (code === 5) build.refused.notFound++;
    else build.refused.other++;
    let cur: TaskSlot | undefined;
    try {
      cur = w.taskId === '' ? undefined : this.current(w.taskId, build);
    } catch {
      cur = undefined;
    }
    return {
      transitionId: w.transitionId,
      taskId: w.taskId,
      code,
      reason,
      message: err instanceof Error ? err.message : String(err),
      revision: cur?.task.revision ?? 0,
      seq: cur?.task.seq ?? 0,
      duplicate: false,
    };
  }

  /**
   * One segment, the head, and the records of the tasks that reached a milestone, put straight
   * into a LevelDB chained batch so that each encoded value can be collected at once. Returns the
   * bytes of the keys and values it puts.
   */
  private fill(build: CommitBuild, batch: Batch): number {
    let bytes = 0;
    const put = (key: string, value: Uint8Array): void => {
      batch.put(key, value);
      bytes += putBytes(key, value);
    };
    const last = build.next - 1;
    // Each encoded value is a view of one reused buffer: LevelDB copies it at put.
    put(segmentKey(build.first, last, build.atMs), encodeSegment(this.scratch, build.entries));
    put(HEAD_KEY, jsonValue([last, last]));
    for (const [id, s] of build.staged) {
      if (!s.milestone) continue;
      const task = s.slot.task;
      // A terminal record embeds the whole log; a live one only what was embedded before.
      const embedded = isTerminalState(task.state) ? s.slot.log.length : s.slot.embedded;
      const value = encodeRecord(this.scratch, task, s.slot.log, embedded);
      if (embedded !== s.slot.embedded) s.slot = { ...s.slot, embedded };
      const before = s.before;
      const wasEnded = before !== undefined && !s.wasLive;
      if (wasEnded) batch.del(endedKey(before.task.state, endedAtMs(before.task), id));
      if (isTerminalState(task.state)) {
        put(DONE + id, value);
        if (s.wasLive) batch.del(LIVE + id);
        put(endedKey(task.state, endedAtMs(task), id), encodeEnded(task));
      } else {
        put(LIVE + id, value);
        if (wasEnded) batch.del(DONE + id);
      }
      if (s.idempotencyKey !== '') put(IDEMPOTENCY + s.idempotencyKey, jsonValue([id]));
    }
    return bytes;
  }

  /** After the batch is synced: the staged state becomes the store's, then watchers hear of it. */
  private publish(build: CommitBuild, opCount: number, bytes: number): void {
    const observer = this.onCommitted;
    const ended: Task[] | undefined = observer ? [] : undefined;
    for (const [id, s] of build.staged) {
      const slot = s.slot;
      const before = this.live.get(id);
      if (before !== undefined) this.unfinishedBytes -= memoryOf(before.task);
      if (isTerminalState(slot.task.state)) {
        this.live.delete(id);
        if (s.wasLive || s.before === undefined) ended?.push(slot.task);
      } else {
        this.live.set(id, slot);
        this.unfinishedBytes += memoryOf(slot.task);
      }
    }
    const last = build.next - 1;
    this.revision = last;
    this.counters.commits++;
    this.counters.transitions += build.entries.length;
    this.counters.puts += opCount;
    this.counters.writtenBytes += bytes;
    this.counters.tasksCreated += build.created;
    if (observer) {
      try {
        observer(build.entries, ended!);
      } catch {
        // Metrics must never fail a commit that is already durable.
      }
    }
    this.hub.publish({ first: build.first, last, entries: build.entries });
  }

  private countRefusals(build: CommitBuild): void {
    const r = build.refused;
    this.counters.staleRefused += r.stale;
    this.counters.illegalRefused += r.illegal + r.mismatch;
    this.counters.stateMismatchRefused += r.mismatch;
    this.counters.invalidRefused += r.invalid;
    this.counters.notFoundRefused += r.notFound;
    this.counters.duplicates += build.duplicates;
  }

  // ---- reads ----------------------------------------------------------------------------------

  async getTask(taskId: string): Promise<Task> {
    const slot = await this.readSlot(checkTaskId(taskId));
    if (slot === undefined) throw notFound('task', taskId, 'task_id');
    return (await this.withBranchesNow([slot.task]))[0] as Task;
  }

  /**
   * The tasks with each branch's current stage, state and attempt: a branch is a task of its own,
   * so the record keeps only what the fan-out started. A branch deleted by retention keeps that.
   */
  private async withBranchesNow(tasks: Task[]): Promise<Task[]> {
    if (tasks.every((t) => t.branches.length === 0)) return tasks;
    const away: string[] = [];
    for (const t of tasks) {
      for (const b of t.branches) if (!this.live.has(b.branchId)) away.push(b.branchId);
    }
    const ended = new Map<string, Task>();
    for (const task of await this.endedTasks(away)) if (task) ended.set(task.taskId, task);
    return tasks.map((t) =>
      t.branches.length === 0
        ? t
        : {
            ...t,
            branches: t.branches.map((b) => {
              const now = this.live.get(b.branchId)?.task ?? ended.get(b.branchId);
              return now === undefined
                ? b
                : {
                    branchId: b.branchId,
                    stage: now.stage,
                    state: now.state,
                    attempt: now.attempt,
                  };
            }),
          },
    );
  }

  /** The task's whole log in seq order, a page at a time (page size 0 = 1000). */
  async getHistory(taskId: string, pageSize = 0, pageToken = ''): Promise<GetTaskHistoryResponse> {
    const slot = await this.readSlot(checkTaskId(taskId));
    if (slot === undefined) throw notFound('task', taskId, 'task_id');
    const size = clampPage(pageSize, 1000, 10_000);
    const from = pageToken === '' ? 0 : Number(decodePageToken(pageToken, 'h')[0]);
    if (!Number.isSafeInteger(from) || from < 0) {
      throw invalidArgument(
        'page_token',
        'is not a token this list returned',
        'INVALID_PAGE_TOKEN',
      );
    }
    const page = slot.log.slice(from, from + size).map((e) => toTransition(slot.task, e));
    const end = from + fittingEnd(page, 0, this.replyBudget, transitionBytes);
    return {
      transitions: page.slice(0, end - from),
      nextPageToken: end < slot.log.length ? encodePageToken('h', [end]) : '',
    };
  }

  /**
   * Unfinished tasks, oldest first (by the revision at which each became live), from the cache,
   * which is authoritative. Not a snapshot: tasks that end between pages drop out.
   */
  listUnfinished(
    stages: readonly string[] = [],
    pageSize = 0,
    pageToken = '',
  ): ListUnfinishedTasksResponse {
    this.assertOpen();
    const size = clampPage(pageSize, 1000, 10_000);
    const after = pageToken === '' ? 0 : Number(decodePageToken(pageToken, 'u')[0]);
    const wanted = stages.length === 0 ? undefined : new Set(stages);
    const tasks: Task[] = [];
    let lastRev = after;
    let more = false;
    let bytes = 0;
    for (const slot of this.live.values()) {
      if (slot.liveRev <= after || (wanted !== undefined && !wanted.has(slot.task.stage))) continue;
      if (tasks.length === size) {
        more = true;
        break;
      }
      bytes += taskBytes(slot.task);
      if (tasks.length > 0 && bytes > this.replyBudget) {
        more = true;
        break;
      }
      tasks.push(slot.task);
      lastRev = slot.liveRev;
    }
    return {
      tasks,
      nextPageToken: more ? encodePageToken('u', [lastRev]) : '',
      revision: this.revision,
      readAt: new Date(this.now()),
    };
  }

  /**
   * Tasks matching a filter, newest first: live tasks (by when they became live), then ended
   * tasks (most recently ended first, from the x: index). Not a snapshot across pages.
   */
  async listTasks(
    filter: TaskFilter | undefined,
    pageSize = 0,
    pageToken = '',
  ): Promise<ListTasksResponse> {
    this.assertOpen();
    const f = compileFilter(filter);
    const size = clampPage(pageSize, 100, 1000);
    const cursor =
      pageToken === '' ? ['L', Number.MAX_SAFE_INTEGER] : decodePageToken(pageToken, 'tasks');
    // Each task with the cursor that resumes after it.
    const page: { task: Task | undefined; after: (string | number)[] }[] = [];
    let more = false;
    if (cursor[0] === 'L') {
      const before = Number(cursor[1]);
      const live = [...this.live.values()]
        .filter((s) => s.liveRev < before && this.matchesTask(f, s.task))
        .sort((a, b) => b.liveRev - a.liveRev);
      for (const s of live.slice(0, size)) page.push({ task: s.task, after: ['L', s.liveRev] });
      more = live.length > size;
    }
    if (!more) {
      const endedBefore: [number, string] =
        cursor[0] === 'T'
          ? [Number(cursor[1]), String(cursor[2])]
          : [Number.MAX_SAFE_INTEGER, '\uffff'];
      // With a full page of live tasks, a limit of 0 still tells whether ended ones follow.
      const scan = await this.scanEnded(f, size - page.length, endedBefore);
      const tasks = await this.endedTasks(scan.found.map((x) => x.taskId));
      scan.found.forEach((x, i) =>
        page.push({ task: tasks[i], after: ['T', x.endedAtMs, x.taskId] }),
      );
      more = scan.more;
    }
    const tasks = await this.withBranchesNow(
      page.flatMap((p) => (p.task === undefined ? [] : [p.task])),
    );
    const end = fittingEnd(tasks, 0, this.replyBudget, taskBytes);
    // The cursor of the last task sent; an unreadable record between two tasks is passed over.
    let sent = 0;
    let last: (string | number)[] | undefined;
    for (const p of page) {
      if (p.task !== undefined && sent++ === end) break;
      last = p.after;
    }
    const cut = end < tasks.length;
    return {
      tasks: tasks.slice(0, end),
      nextPageToken: (cut || more) && last !== undefined ? encodePageToken('tasks', last) : '',
    };
  }

  /** Up to `limit` ended tasks matching `f`, newest first, strictly before `before`. */
  private async scanEnded(
    f: CompiledFilter,
    limit: number,
    before: [number, string],
  ): Promise<{ found: { endedAtMs: number; taskId: string }[]; more: boolean }> {
    const states = TERMINAL_STATES.filter((s) => f.states === undefined || f.states.has(s));
    const candidates: { endedAtMs: number; taskId: string }[] = [];
    for (const state of states) {
      const prefix = endedPrefix(state);
      const it = this.db.iterator({
        gte: prefix,
        lt: endedKey(state, before[0], before[1]),
        reverse: true,
      });
      try {
        let taken = 0;
        for (;;) {
          const chunk = await it.nextv(Math.min(256, limit + 1));
          if (chunk.length === 0) break;
          for (const [key, value] of chunk) {
            const k = parseEndedKey(key);
            const [pipeline, version, stage] = decodeEnded(key, value);
            if (!this.matchesParts(f, state, pipeline, version, stage)) continue;
            candidates.push(k);
            taken++;
          }
          if (taken > limit) break;
        }
      } finally {
        await it.close();
      }
    }
    candidates.sort(
      (a, b) =>
        b.endedAtMs - a.endedAtMs || (a.taskId < b.taskId ? 1 : a.taskId > b.taskId ? -1 : 0),
    );
    return { found: candidates.slice(0, limit), more: candidates.length > limit };
  }

  /** The stored records of ended tasks, in one read, in order; undefined where none is readable. */
  private async endedTasks(taskIds: readonly string[]): Promise<(Task | undefined)[]> {
    if (taskIds.length === 0) return [];
    const values = await this.db.getMany(taskIds.map((id) => DONE + id));
    return values.map((value, i) => {
      const slot = this.decodeSlot(DONE + (taskIds[i] as string), value);
      return slot === null || slot instanceof CorruptValueError ? undefined : slot.task;
    });
  }

  private async readSlot(taskId: string): Promise<TaskSlot | undefined> {
    this.assertOpen();
    const live = this.live.get(taskId);
    if (live !== undefined) return live;
    const value = await this.db.get(DONE + taskId);
    const slot = this.decodeSlot(DONE + taskId, value);
    // The task may have become live again while we read.
    const again = this.live.get(taskId);
    if (again !== undefined) return again;
    if (slot instanceof CorruptValueError) {
      throw new DsatError('INTERNAL', 'STORE_DAMAGED', `the record of task ${taskId} is damaged`, {
        cause: slot,
      });
    }
    return slot ?? undefined;
  }

  // ---- watches --------------------------------------------------------------------------------

  /** See store-watch.ts: the record, then the task's transitions, ending after a terminal one. */
  watchTask(
    taskId: string,
    fromRevision: number,
    signal?: AbortSignal,
  ): AsyncGenerator<WatchTaskResponse> {
    return watchTask(this.watchSource, taskId, fromRevision, signal);
  }

  /**
   * See store-watch.ts: the filtered global feed from a revision, stored then live;
   * `skipTransitionIdPrefix` leaves out a writer's own transitions (the revision still moves).
   */
  watchEvents(
    filter: TaskFilter | undefined,
    fromRevision: number,
    signal?: AbortSignal,
    skipTransitionIdPrefix = '',
    project?: TransitionProjection,
  ): AsyncGenerator<WatchEventsResponse> {
    return watchEvents(
      this.watchSource,
      filter,
      fromRevision,
      signal,
      skipTransitionIdPrefix,
      project,
    );
  }

  private readonly watchSource: WatchSource;

  // ---- deletes, pipelines, sweeps ---------------------------------------------------------------

  /** Deletes terminal tasks (by id, and every terminal task matching `filter`); live ones stay. */
  async deleteTasks(taskIds: readonly string[], filter?: TaskFilter): Promise<number> {
    taskIds.forEach((id, i) => checkTaskId(id, `task_ids[${i}]`));
    const f = filter === undefined || isEmptyFilter(filter) ? undefined : compileFilter(filter);
    return this.exclusive(async () => {
      let deleted = 0;
      const ids = taskIds.filter((id) => !this.live.has(id));
      const values = ids.length === 0 ? [] : await this.db.getMany(ids.map((id) => DONE + id));
      const ops: Op[] = [];
      values.forEach((value, i) => {
        const slot = this.decodeSlot(DONE + (ids[i] as string), value);
        if (slot === null || slot instanceof CorruptValueError) return;
        ops.push(...deleteOps(slot.task));
        deleted++;
      });
      if (ops.length > 0) await this.write(ops);
      if (f !== undefined) deleted += await this.deleteEnded(f, Number.MAX_SAFE_INTEGER);
      return deleted;
    });
  }

  /** Deletes ended tasks matching `f` that ended before `endedBeforeMs`, in bounded batches. */
  private async deleteEnded(f: CompiledFilter, endedBeforeMs: number): Promise<number> {
    let deleted = 0;
    for (const state of TERMINAL_STATES) {
      if (f.states !== undefined && !f.states.has(state)) continue;
      let after = ''; // pages on past rows the filter kept
      for (;;) {
        const range = { lt: endedKey(state, endedBeforeMs, ''), limit: SWEEP_CHUNK };
        const rows = await this.db
          .iterator(after === '' ? { ...range, gte: endedPrefix(state) } : { ...range, gt: after })
          .all();
        const ops: Op[] = [];
        for (const [key, value] of rows) {
          const [pipeline, version, stage, idempotencyKey] = decodeEnded(key, value);
          if (!this.matchesParts(f, state, pipeline, version, stage)) continue;
          const { taskId } = parseEndedKey(key);
          ops.push({ type: 'del', key }, { type: 'del', key: DONE + taskId });
          if (idempotencyKey !== '') ops.push({ type: 'del', key: IDEMPOTENCY + idempotencyKey });
          deleted++;
        }
        if (ops.length > 0) await this.write(ops);
        const last = rows[rows.length - 1];
        if (rows.length < SWEEP_CHUNK || last === undefined) break;
        after = last[0];
      }
    }
    return deleted;
  }

  /** Stores a new version of a pipeline, unless it equals the latest one (then changed=false). */
  async savePipeline(pipeline: Pipeline): Promise<SavePipelineResponse> {
    // The tracker's rules: a stored pipeline is one every router and tracker can run.
    assertValidPipeline(pipeline);
    return this.exclusive(async () => {
      const versions = this.pipelines.get(pipeline.name) ?? [];
      const latest = versions[versions.length - 1];
      if (latest !== undefined && samePipeline(latest, pipeline))
        return { pipeline: latest, changed: false };
      const stored: Pipeline = {
        ...pipeline,
        version: (latest?.version ?? 0) + 1,
        createdAt: new Date(this.now()),
      };
      await this.write([
        {
          type: 'put',
          key: pipelineKey(stored.name, stored.version),
          value: jsonValue(Pipeline.toJSON(stored)),
        },
      ]);
      this.addPipeline(stored);
      return { pipeline: stored, changed: true };
    });
  }

  /** One pipeline version; version 0 = the latest. */
  getPipeline(name: string, version = 0): Pipeline {
    this.assertOpen();
    const versions = this.pipelines.get(name);
    const found =
      version === 0
        ? versions?.[versions.length - 1]
        : versions?.find((p) => p.version === version);
    if (found === undefined)
      throw notFound('pipeline', version === 0 ? name : `${name}@${version}`, 'name');
    return found;
  }

  /** The latest version of every pipeline, by name. */
  listPipelines(pageSize = 0, pageToken = ''): ListPipelinesResponse {
    this.assertOpen();
    const size = clampPage(pageSize, 100, 1000);
    const after = pageToken === '' ? '' : String(decodePageToken(pageToken, 'p')[0]);
    const names = [...this.pipelines.keys()].filter((n) => n > after).sort();
    const latest = names.slice(0, size).map((n) => {
      const versions = this.pipelines.get(n) as Pipeline[];
      return versions[versions.length - 1] as Pipeline;
    });
    const end = fittingEnd(latest, 0, this.replyBudget, (p) =>
      itemBytes(Pipeline.encode(p).finish().byteLength),
    );
    const page = latest.slice(0, end);
    return {
      pipelines: page,
      nextPageToken:
        names.length > end ? encodePageToken('p', [(page[page.length - 1] as Pipeline).name]) : '',
    };
  }

  /**
   * Sweeps feed segments out of the window (first re-putting the records of live tasks whose
   * unrecorded transitions are in them) and deletes tasks ended longer than the retention ago.
   * Runs in bounded chunks between commits.
   */
  async sweep(): Promise<SweepReport> {
    let segmentsDeleted = 0;
    let recordsCheckpointed = 0;
    for (;;) {
      const r = await this.exclusive(() => this.sweepFeedChunk());
      segmentsDeleted += r.segments;
      recordsCheckpointed += r.checkpoints;
      if (r.segments < SWEEP_CHUNK) break;
    }
    const tasksDeleted = await this.exclusive(() =>
      this.deleteEnded(MATCH_ALL, this.now() - this.retentionMs),
    );
    return { segmentsDeleted, recordsCheckpointed, tasksDeleted };
  }

  private async sweepFeedChunk(): Promise<{ segments: number; checkpoints: number }> {
    const cutoffMs = this.now() - this.feedWindowMs;
    const cutoffRev = this.feedWindowRevisions > 0 ? this.revision - this.feedWindowRevisions : 0;
    const keys = await this.db.keys({ gte: FEED, lt: prefixEnd(FEED), limit: SWEEP_CHUNK }).all();
    const ops: Op[] = [];
    let boundary = 0;
    for (const key of keys) {
      const k = parseSegmentKey(key);
      // The newest segment stays: it anchors the revision counter check at open.
      if (k.last >= this.revision || (k.atMs >= cutoffMs && k.last > cutoffRev)) break;
      ops.push({ type: 'del', key });
      boundary = k.last;
    }
    if (ops.length === 0) return { segments: 0, checkpoints: 0 };
    const segments = ops.length;
    const checkpointed: [string, TaskSlot][] = [];
    for (const [id, slot] of this.live) {
      const firstInFeed = slot.log[slot.embedded];
      if (firstInFeed !== undefined && firstInFeed.revision <= boundary) {
        const embedded = slot.log.length;
        const value = Buffer.from(encodeRecord(this.scratch, slot.task, slot.log, embedded));
        ops.push({ type: 'put', key: LIVE + id, value });
        checkpointed.push([id, { ...slot, embedded }]);
      }
    }
    await this.write(ops);
    for (const [id, slot] of checkpointed) this.live.set(id, slot);
    this.counters.puts += ops.length;
    for (const op of ops)
      if (op.type === 'put') this.counters.writtenBytes += putBytes(op.key, op.value);
    this.feedStart = boundary + 1;
    return { segments, checkpoints: checkpointed.length };
  }

  // ---- stats, close ---------------------------------------------------------------------------

  stats(): StoreStats {
    return {
      revision: this.revision,
      unfinishedTasks: this.live.size,
      unfinishedBytes: this.unfinishedBytes,
      maxUnfinishedBytes: this.maxUnfinishedBytes,
      ...this.counters,
      feedStartRevision: this.feedStart,
      watchers: this.hub.watcherCount,
      lastSweepError: this.lastSweepError,
    };
  }

  /** Commits what was already submitted, stops the sweep timer, ends watches, closes LevelDB. */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
      await this.idle();
      this.hub.closeAll(storeClosed(this.dir));
      try {
        // After a failed write the close is not clean, and the disk may be full.
        if (this.failure === undefined) {
          writeMarker(this.dir, { revision: this.revision, cleanClose: true });
        }
      } finally {
        await this.db.close();
      }
    })();
    return this.closing;
  }

  /**
   * One atomic LevelDB batch. The chained form costs ~2.5 µs a put here; abstract-level's array
   * form with `{ sync }` costs ~18 µs a put (it copies the options into every operation).
   */
  private write(ops: readonly Op[]): Promise<void> {
    const batch = this.db.batch();
    for (const op of ops) {
      if (op.type === 'put') batch.put(op.key, op.value);
      else batch.del(op.key);
    }
    return this.persist(batch);
  }

  /**
   * Every write to LevelDB. After LevelDB fails one (a full disk, an I/O error) the store writes
   * nothing more: its log may end in a torn record, and the next recovery drops the rest of the
   * log block after it — records appended there, acknowledged, would be lost (measured with a full
   * tmpfs that was then grown). Stopping is safe: the torn tail is the failed write, which nobody
   * was told succeeded, and a restart recovers into a new log.
   */
  private async persist(batch: Batch): Promise<void> {
    if (this.failure) {
      await batch.close().catch(() => undefined);
      throw this.failure;
    }
    try {
      await batch.write({ sync: this.sync });
    } catch (err) {
      await batch.close().catch(() => undefined);
      throw this.fail(err);
    }
  }

  private fail(cause: unknown): DsatError {
    if (this.failure) return this.failure;
    const why = cause instanceof Error ? cause.message : String(cause);
    this.failure = new DsatError(
      'UNAVAILABLE',
      'STORE_WRITE_FAILED',
      `the status store at ${this.dir} failed a write (${why}) and takes no more writes until ` +
        'the status service restarts; nothing acknowledged is lost',
      { cause, metadata: { dir: this.dir } },
    );
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    // After the refused writers are answered: a shutdown started at once would end their streams
    // with a bare "shutting down" before they read why.
    const failure = this.failure;
    setImmediate(() => this.onFailure?.(failure));
    return failure;
  }

  private idle(): Promise<void> {
    if (!this.draining) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private assertOpen(): void {
    if (this.closed) throw storeClosed(this.dir);
  }

  // ---- open -----------------------------------------------------------------------------------

  /** Installs what store-load.ts read and checked, and starts the sweep timer. */
  async load(): Promise<void> {
    const loaded = await loadStore(this.opened);
    for (const p of loaded.pipelines) this.addPipeline(p);
    for (const slot of loaded.live) {
      this.live.set(slot.task.taskId, slot);
      this.unfinishedBytes += memoryOf(slot.task);
    }
    this.revision = loaded.revision;
    this.feedStart = loaded.feedStart;
    this.report = {
      dir: this.dir,
      created: this.opened.created,
      repaired: this.opened.repaired,
      revision: loaded.revision,
      liveTasks: this.live.size,
      feedStartRevision: loaded.feedStart,
      refoldedTasks: loaded.refolded,
      lost: loaded.lost,
      damagedTasks: loaded.damagedTasks,
    };
    if (this.sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => {
        this.sweep().then(
          () => (this.lastSweepError = ''),
          (err: unknown) =>
            (this.lastSweepError = err instanceof Error ? err.message : String(err)),
        );
      }, this.sweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  // ---- filters --------------------------------------------------------------------------------

  private addPipeline(p: Pipeline): void {
    const versions = this.pipelines.get(p.name) ?? [];
    versions.push(p);
    versions.sort((a, b) => a.version - b.version);
    this.pipelines.set(p.name, versions);
    this.stagesByVersion.set(`${p.name}@${p.version}`, new Set(p.stages.map((s) => s.name)));
    for (const key of [...this.decorators.keys()])
      if (key.startsWith(`${p.name}\0`)) this.decorators.delete(key);
  }

  private readonly decoratorsOf = (
    pipeline: string,
    version: number,
    stage: string,
  ): readonly string[] => {
    const key = `${pipeline}\0${version}\0${stage}`;
    let names = this.decorators.get(key);
    if (names === undefined) {
      const versions = this.pipelines.get(pipeline);
      const p = versions?.find((v) => v.version === version) ?? versions?.[versions.length - 1];
      const decorators = p?.stages.find((s) => s.name === stage)?.decorators ?? [];
      names = decorators
        .filter((d) => d === Decorator.DECORATOR_PUBLISH || d === Decorator.DECORATOR_ASYNC)
        .map((d) => (d === Decorator.DECORATOR_PUBLISH ? 'PUBLISH' : 'ASYNC'));
      this.decorators.set(key, names);
    }
    return names;
  };

  private matchesParts(
    f: CompiledFilter,
    state: TaskState,
    pipeline: string,
    version: number,
    stage: string,
  ): boolean {
    return filterMatches(f, state, pipeline, version, stage, this.decoratorsOf);
  }

  private matchesTask(f: CompiledFilter, task: Task): boolean {
    return this.matchesParts(f, task.state, task.pipeline, task.pipelineVersion, task.stage);
  }
}

// ---- helpers of the write path ------------------------------------------------------------------

function entry(
  build: CommitBuild,
  w: TransitionWrite,
  seq: number,
  from: TaskState,
  to: TaskState,
  x: {
    stage: string;
    attempt: number;
    reason: string;
    payload?: LogEntry['payload'];
    input?: LogEntry['input'];
    branches?: LogEntry['branches'];
  },
): LogEntry {
  return {
    revision: build.next++,
    seq,
    from,
    to,
    stage: x.stage,
    attempt: x.attempt,
    workerId: w.workerId,
    reason: x.reason,
    atMs: build.atMs,
    transitionId: w.transitionId,
    error: w.error,
    payload: x.payload,
    input: x.input,
    progress: w.progress,
    asyncToken: to === TaskState.TASK_STATE_WAITING ? w.asyncToken : '',
    branches: x.branches,
  };
}

function feedEntry(task: Task, e: LogEntry): FeedEntry {
  return {
    taskId: task.taskId,
    pipeline: task.pipeline,
    pipelineVersion: task.pipelineVersion,
    traceId: task.traceId,
    parentTaskId: task.parentTaskId,
    entry: e,
  };
}

/** A repeated write has the same target state, so only those entries' ids are compared. */
function findTransition(
  log: readonly LogEntry[],
  transitionId: string,
  to: TaskState,
): LogEntry | undefined {
  for (let i = log.length - 1; i >= 0; i--) {
    const e = log[i] as LogEntry;
    if (e.to === to && e.transitionId === transitionId) return e;
  }
  return undefined;
}

function ok(
  transitionId: string,
  taskId: string,
  revision: number,
  seq: number,
  duplicate: boolean,
): TransitionOutcome {
  return { transitionId, taskId, code: 0, reason: '', message: '', revision, seq, duplicate };
}

function endedAtMs(task: Task): number {
  return task.updatedAt?.getTime() ?? 0;
}

function deleteOps(task: Task): Op[] {
  const ops: Op[] = [
    { type: 'del', key: DONE + task.taskId },
    { type: 'del', key: endedKey(task.state, endedAtMs(task), task.taskId) },
  ];
  if (task.idempotencyKey !== '') ops.push({ type: 'del', key: IDEMPOTENCY + task.idempotencyKey });
  return ops;
}

function samePipeline(a: Pipeline, b: Pipeline): boolean {
  const bytes = (p: Pipeline): Buffer =>
    Buffer.from(Pipeline.encode({ ...p, version: 0, createdAt: undefined }).finish());
  return bytes(a).equals(bytes(b));
}

function storeClosed(dir: string): DsatError {
  return new DsatError('UNAVAILABLE', 'STORE_CLOSED', `status store ${dir} is closed`);
}
