import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import type { TransitionOutcome } from '../../../gen/dsat/status/v1/status';
import { TransitionWrite } from '../../../gen/dsat/status/v1/status';
import { TaskState, type Task, type Transition } from '../../../gen/dsat/task/v1/task';
import {
  openStatusStore,
  type StatusStore,
  type StatusStoreOptions,
} from '../../../services/status/status-store';

export const S = TaskState;

/** Temp directories made by a test file, removed by `cleanDirs` in afterEach. */
const dirs: string[] = [];

export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-'));
  dirs.push(dir);
  return dir;
}

export function cleanDirs(): void {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** Stores opened by a test, closed by `closeStores` in afterEach even when the test failed. */
const stores = new Set<StatusStore>();

/** The chain s1 → s2 → s3 → s4 the tests' tasks walk, saved as version 1 of `name`. */
export function testPipeline(name: string): Pipeline {
  return Pipeline.fromPartial({
    name,
    stages: [
      { name: 's1', next: ['s2'] },
      { name: 's2', next: ['s3'] },
      { name: 's3', next: ['s4'] },
      { name: 's4' },
    ],
  });
}

/** The pipelines the tests create tasks in; a create needs its pipeline saved. */
export const TEST_PIPELINES = ['demo', 'other', 'bulk', 'rare'].map(testPipeline);

/**
 * Opens a store; a new one gets `pipelines` saved first (default TEST_PIPELINES), so that tasks
 * can be created in them.
 */
export async function open(
  options: Partial<StatusStoreOptions> & { dir?: string; pipelines?: readonly Pipeline[] } = {},
): Promise<StatusStore> {
  const { pipelines = TEST_PIPELINES, ...rest } = options;
  const store = await openStatusStore({
    sweepIntervalMs: 0,
    ...rest,
    dir: options.dir ?? tempDir(),
  });
  stores.add(store);
  if (store.openReport.created) for (const p of pipelines) await store.savePipeline(p);
  return store;
}

export async function closeStores(): Promise<void> {
  for (const store of [...stores]) {
    stores.delete(store);
    await store.close().catch(() => undefined);
  }
}

export async function reopen(
  store: StatusStore,
  options: Partial<StatusStoreOptions> = {},
): Promise<StatusStore> {
  await store.close();
  stores.delete(store);
  return open({ ...options, dir: store.dir });
}

let ids = 0;

/** A complete TransitionWrite, as a decoded request would be. */
export function write(
  fields: Partial<TransitionWrite> & Pick<TransitionWrite, 'taskId'>,
): TransitionWrite {
  return TransitionWrite.fromPartial({ transitionId: `t-${++ids}`, ...fields });
}

export function createWrite(
  taskId: string,
  fields: Partial<TransitionWrite> & { idempotencyKey?: string; pipeline?: string } = {},
): TransitionWrite {
  const { idempotencyKey = '', pipeline = 'demo', ...rest } = fields;
  return write({
    taskId,
    toState: S.TASK_STATE_QUEUED,
    stage: 's1',
    payload: { data: Buffer.from(`input of ${taskId}`), contentType: 'text/plain' },
    create: {
      pipeline,
      pipelineVersion: 1,
      idempotencyKey,
      priority: 0,
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    },
    ...rest,
  });
}

/** Moves a task from its current state, checking the write was applied. */
export async function move(
  store: StatusStore,
  taskId: string,
  toState: TaskState,
  fields: Partial<TransitionWrite> = {},
): Promise<TransitionOutcome> {
  const task = await store.getTask(taskId);
  const [outcome] = await store.submit([
    write({ taskId, expectedState: task.state, expectedAttempt: task.attempt, toState, ...fields }),
  ]);
  if (outcome === undefined || outcome.code !== 0) {
    throw new Error(`move ${taskId} to ${TaskState[toState]} refused: ${JSON.stringify(outcome)}`);
  }
  return outcome;
}

export async function createTask(
  store: StatusStore,
  taskId: string,
  fields: Parameters<typeof createWrite>[1] = {},
) {
  const [outcome] = await store.submit([createWrite(taskId, fields)]);
  if (outcome?.code !== 0) throw new Error(`create ${taskId} refused: ${JSON.stringify(outcome)}`);
  return outcome;
}

/**
 * An independent fold of the fields a history carries, to check that a record is the fold of its
 * log. (The store folds with its own code; this is the oracle.)
 */
export function foldHistory(history: readonly Transition[]): Partial<Task> {
  let hops = 0;
  let workerId = '';
  let lastError: Task['lastError'];
  let output: Task['output'];
  let stage = '';
  history.forEach((t, i) => {
    if (t.seq !== i + 1) throw new Error(`history seq ${t.seq} at position ${i}`);
    const prev = history[i - 1];
    if (prev !== undefined && prev.toState !== t.fromState)
      throw new Error(`history breaks at seq ${t.seq}`);
    if (i > 0 && t.stage !== stage) {
      hops++;
      lastError = undefined;
    }
    if (t.toState === S.TASK_STATE_SUCCEEDED) {
      hops++;
      output = t.payload;
    }
    if (t.error !== undefined) lastError = t.error;
    if (t.workerId !== '') workerId = t.workerId;
    stage = t.stage;
  });
  const last = history[history.length - 1];
  if (last === undefined) return {};
  return {
    state: last.toState,
    stage: last.stage,
    attempt: last.attempt,
    seq: last.seq,
    revision: last.revision,
    updatedAt: last.at,
    hops,
    workerId,
    lastError,
    output,
  };
}

/** The fields of a task that foldHistory can check. */
export function foldable(task: Task): Partial<Task> {
  return {
    state: task.state,
    stage: task.stage,
    attempt: task.attempt,
    seq: task.seq,
    revision: task.revision,
    updatedAt: task.updatedAt,
    hops: task.hops,
    workerId: task.workerId,
    lastError: task.lastError,
    output: task.output,
  };
}

export async function collect<T>(iterable: AsyncIterable<T>, count: number): Promise<T[]> {
  const out: T[] = [];
  if (count <= 0) return out;
  for await (const item of iterable) {
    out.push(item);
    if (out.length >= count) break;
  }
  return out;
}

/** Resolves with the iterator's next value or rejects after `ms`, so a hang fails clearly. */
export async function nextWithin<T>(it: AsyncIterator<T>, ms = 5000): Promise<IteratorResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no watch event within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
