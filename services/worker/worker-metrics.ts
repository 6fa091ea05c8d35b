import type { TaskContext, Worker, WorkerHooks } from '../../sdk/worker';
import { settle } from '../../sdk/thenable';
import { dsatMeter, metricsActive, observableInts, attributeSets } from '../shared/metrics';

/**
 * A worker process's metrics: how long its handlers take per stage and how they end (as the
 * worker sees them, before any retry), its attempts running against its slots, and the results
 * and failures its router acknowledged.
 */
export interface WorkerMetrics {
  /** Wraps the worker's hooks so each attempt's handler is timed; the hooks as given when off. */
  timed(hooks: WorkerHooks): WorkerHooks;
  /** Reads the worker's figures at each collection; returns the function that stops it. */
  observe(worker: Worker): () => void;
}

const OFF: WorkerMetrics = { timed: (hooks) => hooks, observe: () => () => {} };

type Outcome = 'succeeded' | 'failed' | 'aborted';

export function workerMetrics(): WorkerMetrics {
  if (!metricsActive()) return OFF;
  const meter = dsatMeter();
  const { gauge, counter, seconds, observe } = observableInts(meter);
  const duration = seconds(
    'dsat.worker.handler.duration',
    'Seconds a stage handler ran, by stage and outcome: succeeded, failed (it threw) or aborted (cancel, timeout, lease lost).',
  );
  const running = gauge('dsat.worker.running', 'Attempts running now.', '{attempt}');
  const slots = gauge(
    'dsat.worker.slots',
    'Attempts the worker runs at most at once.',
    '{attempt}',
  );
  const acked = counter(
    'dsat.worker.reports',
    'Results and failures the router answered, by outcome: succeeded, failed, or refused (the attempt was no longer running).',
    '{report}',
  );
  const attrs = attributeSets(['dsat.stage', 'dsat.outcome']);
  const record = (ctx: TaskContext, outcome: Outcome, started: number) =>
    duration.record(
      (performance.now() - started) / 1000,
      attrs(ctx.stage, ctx.abortReason === undefined ? outcome : 'aborted'),
    );
  return {
    timed(hooks) {
      return {
        ...hooks,
        aroundTask(ctx, run) {
          const started = performance.now();
          return settle(
            () => (hooks.aroundTask ? hooks.aroundTask(ctx, run) : run()),
            (out) => {
              record(ctx, 'succeeded', started);
              return out;
            },
            (err: unknown) => {
              record(ctx, 'failed', started);
              throw err;
            },
          );
        },
      };
    },
    observe(worker) {
      return observe([running, slots, acked], (result) => {
        const info = worker.info();
        result.observe(running, info.inFlight);
        result.observe(slots, info.concurrency);
        result.observe(acked, info.completed, { 'dsat.outcome': 'succeeded' });
        result.observe(acked, info.failed, { 'dsat.outcome': 'failed' });
        result.observe(acked, info.refused, { 'dsat.outcome': 'refused' });
      });
    },
  };
}
