/**
 * The status service through gRPC, from another process: 3-stage task lifecycles (11
 * transitions each) over one ApplyTransitions stream, every write ready in a tick in one message,
 * sync on; then classic-level alone writing the same number of puts in the same commit sizes.
 * Prints one JSON line.
 *
 *   npm run bench:status -- [--tasks 20000] [--inflight 2000] [--no-sync]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { ClassicLevel } from 'classic-level';
import { createChannel, createClient } from 'nice-grpc';
import type { TransitionOutcome } from '../gen/dsat/status/v1/status';
import { serviceEnv, serviceNodeFlags } from '../cli/node-flags';
import { StatusServiceDefinition, TransitionWrite } from '../gen/dsat/status/v1/status';
import { TaskState } from '../gen/dsat/task/v1/task';
import { clientChannelOptions } from '../services/shared/grpc-client';
import { nodeArgs } from './pipeline3/orchestrator';
import { procStats } from './proc-stats';
import { benchPipeline } from './bench-pipeline';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '20000' },
    inflight: { type: 'string', default: '2000' },
    payload: { type: 'string', default: '256' },
    'no-sync': { type: 'boolean', default: false },
  },
});
const TASKS = Number(args.tasks);
const INFLIGHT = Number(args.inflight);
const SYNC = !args['no-sync'];
const PAYLOAD = { data: Buffer.alloc(Number(args.payload), 120), contentType: 'application/json' };
const STAGES = 3;
const {
  TASK_STATE_UNSPECIFIED,
  TASK_STATE_QUEUED,
  TASK_STATE_DISPATCHED,
  TASK_STATE_RUNNING,
  TASK_STATE_SUCCEEDED,
} = TaskState;

function w(
  id: string,
  suffix: string,
  expected: TaskState,
  to: TaskState,
  stage: string,
  extra: Partial<TransitionWrite> = {},
): TransitionWrite {
  return TransitionWrite.fromPartial({
    transitionId: `${id}/${suffix}`,
    taskId: id,
    expectedState: expected,
    expectedAttempt: expected === TASK_STATE_UNSPECIFIED ? 0 : 1,
    toState: to,
    stage,
    attempt: 1,
    ...extra,
  });
}

/** One ApplyTransitions stream; writes submitted in the same tick share a message. */
function writer(address: string) {
  const client = createClient(
    StatusServiceDefinition,
    createChannel(address, undefined, clientChannelOptions()),
  );
  let batch:
    { writes: TransitionWrite[]; waiters: ((o: TransitionOutcome[]) => void)[] } | undefined;
  const sent: { count: number[]; waiters: ((o: TransitionOutcome[]) => void)[] }[] = [];
  let wake: (() => void) | undefined;
  const ready: TransitionWrite[][] = [];
  async function* requests() {
    for (;;) {
      if (ready.length === 0) await new Promise<void>((r) => (wake = r));
      const writes = ready.shift();
      if (writes) yield { writes };
    }
  }
  const responses = client.applyTransitions(requests());
  void (async () => {
    // The stream ends with UNAVAILABLE when the status process is stopped after the run.
    for await (const res of responses) {
      const msg = sent.shift()!;
      let at = 0;
      msg.count.forEach((n, i) => {
        msg.waiters[i]!(res.outcomes.slice(at, at + n));
        at += n;
      });
    }
  })().catch(() => undefined);
  return (writes: TransitionWrite[]): Promise<TransitionOutcome[]> =>
    new Promise((resolve) => {
      if (!batch) {
        const b = {
          writes: [] as TransitionWrite[],
          waiters: [] as ((o: TransitionOutcome[]) => void)[],
          count: [] as number[],
        };
        batch = b;
        setImmediate(() => {
          batch = undefined;
          sent.push({ count: b.count, waiters: b.waiters });
          ready.push(b.writes);
          const wk = wake;
          wake = undefined;
          wk?.();
        });
      }
      const b = batch as unknown as {
        writes: TransitionWrite[];
        waiters: ((o: TransitionOutcome[]) => void)[];
        count: number[];
      };
      b.writes.push(...writes);
      b.waiters.push(resolve);
      b.count.push(writes.length);
    });
}

async function check(p: Promise<TransitionOutcome[]>) {
  for (const o of await p) if (o.code !== 0) throw new Error(`refused: ${JSON.stringify(o)}`);
}

/** A router's view of one task: create, then each stage's DISPATCHED+RUNNING+result in one go. */
async function lifecycle(submit: ReturnType<typeof writer>, n: number) {
  const id = `task-${n}`;
  await check(
    submit([
      w(id, 'c', TASK_STATE_UNSPECIFIED, TASK_STATE_QUEUED, 's1', {
        payload: PAYLOAD,
        create: {
          pipeline: 'bench',
          pipelineVersion: 1,
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      }),
    ]),
  );
  for (let s = 1; s <= STAGES; s++) {
    const stage = `s${s}`;
    await check(
      submit([
        w(id, `${s}d`, TASK_STATE_QUEUED, TASK_STATE_DISPATCHED, stage, { workerId: 'w1' }),
        w(id, `${s}r`, TASK_STATE_DISPATCHED, TASK_STATE_RUNNING, stage, { workerId: 'w1' }),
        s === STAGES
          ? w(id, `${s}s`, TASK_STATE_RUNNING, TASK_STATE_SUCCEEDED, stage, { payload: PAYLOAD })
          : w(id, `${s}q`, TASK_STATE_RUNNING, TASK_STATE_QUEUED, `s${s + 1}`, {
              payload: PAYLOAD,
            }),
      ]),
    );
  }
}

/**
 * classic-level alone: the same number of puts in the same commit sizes and the same bytes, sync
 * as configured. Values are cut from the store's own values, so they compress as the store's do.
 */
async function rawLevel(
  puts: number,
  commits: number,
  bytesPerPut: number,
  corpus: Buffer,
): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-bench-raw-'));
  const db = new ClassicLevel<string, Buffer>(dir, { valueEncoding: 'buffer' });
  await db.open();
  const KEY = 40; // about the store's key length (u:, t:, x: keys hold a task id)
  const valueBytes = Math.max(16, Math.min(corpus.length, bytesPerPut - KEY));
  const perCommit = Math.max(1, Math.round(puts / commits));
  let at = 0;
  const started = performance.now();
  let k = 0;
  for (let c = 0; c < commits; c++) {
    const batch = db.batch();
    for (let i = 0; i < perCommit; i++) {
      if (at + valueBytes > corpus.length) at = 0;
      batch.put(
        `k:${(k++).toString(16).padStart(KEY - 2, '0')}`,
        corpus.subarray(at, at + valueBytes),
      );
      at += valueBytes;
    }
    await batch.write({ sync: SYNC });
  }
  const seconds = (performance.now() - started) / 1000;
  await db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return seconds;
}

/** Up to 16 MiB of the values the store wrote, read back once it is stopped. */
async function storeCorpus(dataDir: string): Promise<Buffer> {
  const db = new ClassicLevel<string, Buffer>(dataDir, { valueEncoding: 'buffer' });
  await db.open();
  const parts: Buffer[] = [];
  let size = 0;
  for await (const value of db.values()) {
    parts.push(value);
    size += value.length;
    if (size >= 16 << 20) break;
  }
  await db.close();
  return Buffer.concat(parts);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-bench-status-'));
  const child = spawn(
    process.execPath,
    [
      ...serviceNodeFlags('status', nodeArgs()),
      path.join(__dirname, '../bin/dsat.js'),
      'status',
      '--port',
      '0',
      '--data-dir',
      path.join(dir, 'data'),
      '--log-level',
      'warn',
      ...(SYNC ? [] : ['--no-sync']),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: serviceEnv() },
  );
  const exited = new Promise((r) => child.once('exit', r));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  try {
    const address = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = /listening on (\S+)/.exec(l);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (c) => reject(new Error(`status exited ${c}`)));
    });
    const stats = createClient(StatusServiceDefinition, createChannel(address));
    await stats.savePipeline({ pipeline: benchPipeline(STAGES) });
    const submit = writer(address);
    const before = await stats.getStoreStats({});
    const cpuBefore = procStats(child.pid!)!.cpuS;
    const clientCpuBefore = process.cpuUsage();
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(INFLIGHT, TASKS) }, async () => {
        while (next < TASKS) await lifecycle(submit, next++);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const clientCpu = process.cpuUsage(clientCpuBefore);
    const after = await stats.getStoreStats({});
    const st = procStats(child.pid!)!;
    const transitions = after.transitions - before.transitions;
    const puts = after.puts - before.puts;
    const commits = after.commits - before.commits;
    const writtenBytes = after.writtenBytes - before.writtenBytes;
    const bytesPerPut = Math.round(writtenBytes / Math.max(1, puts));
    await stop();
    const rawSeconds = await rawLevel(
      puts,
      commits,
      bytesPerPut,
      await storeCorpus(path.join(dir, 'data')),
    );
    const tps = transitions / seconds;
    const raw = transitions / rawSeconds;
    console.log(
      JSON.stringify({
        type: 'summary',
        system: 'dsat-status',
        transitions_per_s: Math.round(tps),
        raw_level_transitions_per_s: Math.round(raw),
        ratio_to_raw: Math.round((tps / raw) * 100) / 100,
        bytes_per_put: bytesPerPut,
        tasks_per_s: Math.round(TASKS / seconds),
        puts_per_task: Math.round((puts / TASKS) * 100) / 100,
        transitions_per_put: Math.round((transitions / puts) * 100) / 100,
        transitions_per_commit: Math.round(transitions / commits),
        status_cpu_us_per_transition: Math.round(((st.cpuS - cpuBefore) * 1e6) / transitions),
        client_cpu_us_per_transition: Math.round((clientCpu.user + clientCpu.system) / transitions),
        peak_rss_mb: Math.round(st.hwmKb / 1024),
        tasks: TASKS,
        inflight: INFLIGHT,
        sync: SYNC,
      }),
    );
  } finally {
    await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
