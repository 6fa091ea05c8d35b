/**
 * The status store alone, in process: 3-stage task lifecycles driven through `submit()` with many
 * tasks in flight and sync on. Prints one JSON line.
 *
 *   npx tsx bench/status-store-raw.ts [--tasks 20000] [--inflight 2000] [--stages 3]
 *                                     [--mode step|stage] [--no-sync] [--payload 100] [--idempotency]
 *                                     [--watchers 0]
 *
 * `--mode step` awaits every write alone (ten commits a task: the worst case). `--mode stage`
 * submits a stage's DISPATCHED, RUNNING and result together, as a router with an instant worker
 * does (it never awaits DISPATCHED/RUNNING): four commits a task. `--watchers N` adds N watchers of
 * the whole feed, as the tracker is.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { TransitionWrite } from '../gen/dsat/status/v1/status';
import { TaskState } from '../gen/dsat/task/v1/task';
import { openStatusStore, type StatusStore } from '../services/status/status-store';
import { benchPipeline } from './bench-pipeline';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '20000' },
    inflight: { type: 'string', default: '2000' },
    stages: { type: 'string', default: '3' },
    payload: { type: 'string', default: '100' },
    'no-sync': { type: 'boolean', default: false },
    idempotency: { type: 'boolean', default: false },
    mode: { type: 'string', default: 'step' },
    watchers: { type: 'string', default: '0' },
    dir: { type: 'string' },
  },
});

const TASKS = Number(args.tasks);
const INFLIGHT = Number(args.inflight);
const STAGES = Number(args.stages);
const PAYLOAD = Buffer.alloc(Number(args.payload), 120);

/** A full TransitionWrite literal: what a decoded protobuf message looks like. */
function write(
  transitionId: string,
  taskId: string,
  expectedState: TaskState,
  toState: TaskState,
  stage: string,
  extra: Pick<TransitionWrite, 'workerId' | 'payload' | 'create'> | undefined = undefined,
): TransitionWrite {
  return {
    transitionId,
    taskId,
    expectedState,
    expectedAttempt: expectedState === TaskState.TASK_STATE_UNSPECIFIED ? 0 : 1,
    toState,
    stage,
    attempt: 0,
    workerId: extra?.workerId ?? '',
    reason: '',
    error: undefined,
    payload: extra?.payload,
    progress: undefined,
    create: extra?.create,
    asyncToken: '',
    fanOutStages: [],
  };
}

async function submit(store: StatusStore, writes: TransitionWrite[]): Promise<void> {
  for (const outcome of await store.submit(writes)) {
    if (outcome.code !== 0) throw new Error(`write refused: ${JSON.stringify(outcome)}`);
  }
}

const STAGE_MODE = args.mode === 'stage';
if (args.mode !== 'step' && !STAGE_MODE) throw new Error('--mode is step or stage');

const {
  TASK_STATE_UNSPECIFIED,
  TASK_STATE_QUEUED,
  TASK_STATE_DISPATCHED,
  TASK_STATE_RUNNING,
  TASK_STATE_SUCCEEDED,
} = TaskState;

/** One task's whole life; each submit is awaited like a router awaiting its durable ack. */
async function lifecycle(store: StatusStore, n: number): Promise<void> {
  const id = uuid();
  const payload = { data: PAYLOAD, contentType: 'application/octet-stream' };
  const create = {
    pipeline: 'bench',
    pipelineVersion: 1,
    idempotencyKey: args.idempotency ? `key-${n}` : '',
    priority: 0,
    traceparent: `00-${uuid().replace(/-/g, '')}-00f067aa0ba902b7-01`,
  };
  const created = write(uuid(), id, TASK_STATE_UNSPECIFIED, TASK_STATE_QUEUED, 's1', {
    workerId: '',
    payload,
    create,
  });
  await submit(store, [created]);
  for (let s = 1; s <= STAGES; s++) {
    const worker = { workerId: 'w1', payload: undefined, create: undefined };
    const done = { workerId: '', payload, create: undefined };
    const stage = [
      write(uuid(), id, TASK_STATE_QUEUED, TASK_STATE_DISPATCHED, '', worker),
      write(uuid(), id, TASK_STATE_DISPATCHED, TASK_STATE_RUNNING, ''),
      s === STAGES
        ? write(uuid(), id, TASK_STATE_RUNNING, TASK_STATE_SUCCEEDED, '', done)
        : write(uuid(), id, TASK_STATE_RUNNING, TASK_STATE_QUEUED, `s${s + 1}`, done),
    ];
    if (STAGE_MODE) await submit(store, stage);
    else for (const w of stage) await submit(store, [w]);
  }
}

/**
 * A random UUID as a decoded request holds it. crypto.randomUUID() returns a rope of small
 * strings, which V8 compares and copies far more slowly than the flat strings protobuf decoding
 * produces; a UTF-8 round trip flattens it.
 */
function uuid(): string {
  return Buffer.from(randomUUID()).toString();
}

async function main(): Promise<void> {
  const dir = args.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-bench-'));
  const store = await openStatusStore({ dir, sync: !args['no-sync'], sweepIntervalMs: 0 });
  await store.savePipeline(benchPipeline(STAGES));
  const watching = new AbortController();
  let watched = 0;
  const watchers = Array.from({ length: Number(args.watchers) }, async () => {
    for await (const batch of store.watchEvents(undefined, 0, watching.signal)) {
      watched += batch.transitions.length;
    }
  });
  let next = 0;
  const started = performance.now();
  const cpuStart = process.cpuUsage();
  const runners = Array.from({ length: Math.min(INFLIGHT, TASKS) }, async () => {
    while (next < TASKS) await lifecycle(store, next++);
  });
  await Promise.all(runners);
  const seconds = (performance.now() - started) / 1000;
  watching.abort();
  await Promise.all(watchers);
  const cpu = process.cpuUsage(cpuStart);
  const stats = store.stats();
  await store.close();
  if (args.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });
  console.log(
    JSON.stringify({
      transitions_per_s: Math.round(stats.transitions / seconds),
      tasks_per_s: Math.round(TASKS / seconds),
      puts_per_task: round(stats.puts / TASKS),
      transitions_per_put: round(stats.transitions / stats.puts),
      transitions_per_task: round(stats.transitions / TASKS),
      transitions_per_commit: Math.round(stats.transitions / stats.commits),
      commits: stats.commits,
      peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
      seconds: round(seconds),
      cpu_us_per_transition: round((cpu.user + cpu.system) / stats.transitions),
      tasks: TASKS,
      inflight: INFLIGHT,
      stages: STAGES,
      sync: !args['no-sync'],
      mode: args.mode,
      watchers: Number(args.watchers),
      watched_transitions: watched,
    }),
  );
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
