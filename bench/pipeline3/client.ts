import { createChannel, createClient } from 'nice-grpc';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import type { SubmitTasksEntry, SubmitTasksRequest } from '../../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { clientChannelOptions } from '../../services/shared/grpc-client';
import { withWireCodecs } from '../../services/shared/message-codecs';
import type { Driver } from './loops';
import { closedLoop, latencyStats, nowMs, openLoop, Phase, percentile, round } from './loops';
import type { BenchTask, StageDoc } from './workload';
import { makeTasks } from './workload';

/**
 * The pipeline3 client process, run by the orchestrator over IPC: submits through one SubmitTasks
 * stream (every task ready in a tick goes in one message) and reads final results from the status
 * feed (SUCCEEDED carries the output), then reports one result object.
 */
const env = (name: string, dflt: string) => process.env[name] || dflt;
const MODE = env('BENCH_MODE', 'T');
const N = Number(env('BENCH_N', '20000'));
const WINDOW = Number(env('BENCH_WINDOW', '2000'));
const RATE = Number(env('BENCH_RATE', '1000'));
const DURATION_S = Number(env('BENCH_DURATION_S', '10'));
const WARMUP = Number(env('BENCH_WARMUP', '1000'));
const WARMUP_WINDOW = Number(env('BENCH_WARMUP_WINDOW', '200'));
const LIMITS = {
  stallMs: Number(env('BENCH_STALL_MS', '15000')),
  hardMs: Number(env('BENCH_HARD_MS', '150000')),
};
const TAG = env('BENCH_TAG', `r${process.pid}`);
const PIPELINE = env('BENCH_PIPELINE', 'pipeline3');

function dsatDriver(routerAddress: string, statusAddress: string): Driver {
  // dsat's own codecs, as its services and CLI use them.
  const router = createClient(
    withWireCodecs(RouterServiceDefinition),
    createChannel(routerAddress, undefined, clientChannelOptions()),
  );
  const status = createClient(
    withWireCodecs(StatusServiceDefinition),
    createChannel(statusAddress, undefined, clientChannelOptions()),
  );
  const abort = new AbortController();
  let pending: SubmitTasksEntry[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  const failures: string[] = [];

  async function* requests(): AsyncIterable<SubmitTasksRequest> {
    while (!closed) {
      if (pending.length === 0) await new Promise<void>((r) => (wake = r));
      if (pending.length === 0) continue;
      const entries = pending;
      pending = [];
      yield { entries };
    }
  }

  return {
    async start(onResult) {
      const stats = await status.getStoreStats({});
      const feed = status.watchEvents(
        {
          filter: {
            pipeline: PIPELINE,
            states: [
              TaskState.TASK_STATE_SUCCEEDED,
              TaskState.TASK_STATE_FAILED,
              TaskState.TASK_STATE_DEAD_LETTERED,
            ],
            stage: '',
            actionKey: '',
          },
          fromRevision: stats.revision,
          // Only what the check below reads.
          transitionMask: ['task_id', 'to_state', 'payload', 'error'],
        },
        { signal: abort.signal },
      );
      void (async () => {
        for await (const batch of feed) {
          for (const t of batch.transitions) {
            if (t.toState !== TaskState.TASK_STATE_SUCCEEDED || !t.payload) {
              failures.push(`${t.taskId} ${TaskState[t.toState]} ${t.error?.message ?? ''}`);
              continue;
            }
            onResult(JSON.parse(Buffer.from(t.payload.data).toString('utf8')) as StageDoc);
          }
        }
      })().catch(() => undefined);
      const acks = router.submitTasks(requests(), { signal: abort.signal });
      void (async () => {
        for await (const res of acks) {
          for (const a of res.acks) if (a.code !== 0) failures.push(`${a.clientRef}: ${a.message}`);
        }
      })().catch(() => undefined);
    },
    submit(task: BenchTask) {
      pending.push({
        clientRef: task.id,
        task: {
          pipeline: PIPELINE,
          payload: Buffer.from(task.json),
          contentType: 'application/json',
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      });
      if (pending.length === 1) {
        // Flush on the next turn: everything submitted in this one rides in the same message.
        setImmediate(() => {
          const w = wake;
          wake = undefined;
          w?.();
        });
      }
    },
    async stop() {
      closed = true;
      wake?.();
      abort.abort();
    },
  };
}

async function run(driver: Driver) {
  const phases = new Map<string, Phase>();
  let unknown = 0;
  const started = nowMs();
  await driver.start((r) => {
    const dash = typeof r.id === 'string' ? r.id.lastIndexOf('-') : -1;
    const ph = dash > 0 ? phases.get(r.id.slice(0, dash)) : undefined;
    const idx = dash > 0 ? Number(r.id.slice(dash + 1)) : -1;
    if (!ph || !(idx >= 0 && idx < ph.n) || ph.tasks[idx]!.id !== r.id) unknown++;
    else ph.receive(r, idx);
  });
  const connectMs = nowMs() - started;
  let current: { phase: string; ph: Phase } | undefined;
  const ticker = setInterval(() => {
    if (current)
      process.send?.({
        type: 'tasks',
        phase: current.phase,
        done: current.ph.received,
        total: current.ph.n,
      });
  }, 250);
  ticker.unref();
  const warm = new Phase(`${TAG}w`, makeTasks(WARMUP, `${TAG}w`));
  phases.set(warm.prefix, warm);
  current = { phase: 'warmup', ph: warm };
  const wr = await closedLoop(driver, warm, WARMUP_WINDOW, LIMITS);
  await new Promise((r) => setTimeout(r, 200));

  const n = MODE === 'L' ? Math.round(RATE * DURATION_S) : N;
  const ph = new Phase(`${TAG}m`, makeTasks(n, `${TAG}m`));
  phases.set(ph.prefix, ph);
  current = { phase: 'measure', ph };
  const out: Record<string, unknown> = {
    type: 'result',
    mode: MODE,
    tag: TAG,
    connect_ms: round(connectMs, 1),
  };
  out.warmup = { n: warm.n, received: warm.received, dups: warm.dups, how: wr.how };
  process.send?.({ type: 'mark', name: 'measure-start' });
  await new Promise((r) => setTimeout(r, 20));
  if (MODE === 'T') {
    const r = await closedLoop(driver, ph, WINDOW, LIMITS);
    const secs = (r.tLast - r.t0) / 1000;
    Object.assign(out, {
      n,
      window: WINDOW,
      how: r.how,
      submitted: r.submitted,
      elapsed_s: round(secs),
      tasks_per_s: round(ph.received / secs, 1),
      lat_closed_loop: latencyStats(ph, ph.sentAt),
    });
  } else {
    const r = await openLoop(driver, ph, RATE, LIMITS);
    const secs = (r.tLast - r.t0) / 1000;
    const lags = Array.from(ph.sentAt, (x, i) => x - ph.sched[i]!).sort((a, b) => a - b);
    Object.assign(out, {
      n,
      offered_rate: RATE,
      duration_s: DURATION_S,
      how: r.how,
      submitted: r.submitted,
      achieved_rate: round(ph.received / secs, 1),
      max_submit_lag_ms: round(r.maxLag),
      latency: latencyStats(ph, ph.sched),
      latency_from_send: latencyStats(ph, ph.sentAt),
      submit_lag_p50_ms: round(percentile(lags, 50)),
    });
  }
  process.send?.({ type: 'mark', name: 'measure-end' });
  clearInterval(ticker);
  await new Promise((r) => setTimeout(r, 500)); // late duplicates
  const v = ph.badResults();
  Object.assign(out, {
    received: ph.received,
    lost: ph.n - ph.received,
    dups: ph.dups + warm.dups,
    unknown,
    bad_content: v.bad,
    bad_examples: v.examples,
    warmup_lost: warm.n - warm.received,
  });
  return out;
}

async function main() {
  const driver = dsatDriver(
    env('BENCH_ROUTER', '127.0.0.1:7402'),
    env('BENCH_STATUS', '127.0.0.1:7401'),
  );
  let result: Record<string, unknown>;
  try {
    result = await run(driver);
  } catch (e) {
    result = { type: 'result', error: String(e instanceof Error ? e.stack : e) };
  }
  if (process.send) process.send(result);
  else console.log(JSON.stringify(result));
  const stop = async () => {
    await driver.stop().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('disconnect', () => void stop());
  if (!process.send) await stop();
}

void main();
