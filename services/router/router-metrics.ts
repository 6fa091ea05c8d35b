import type { Attributes, BatchObservableResult } from '@opentelemetry/api';
import { DURATION_BUCKETS_S, dsatMeter, metricsActive, observableInts } from '../shared/metrics';
import type { Dispatcher } from './dispatcher';

/**
 * A router's metrics, per stage it serves: what waits, what runs, the credit its workers grant,
 * attempts ended and their durations, results refused as stale. The gauges and counters are read
 * from the dispatcher when scraped; only the duration is recorded as attempts end.
 */
export interface RouterMetrics {
  /** The dispatcher's `onAttemptEnded`; undefined when the process exports no metrics. */
  readonly attemptEnded: ((stage: string, ok: boolean, seconds: number) => void) | undefined;
  /** Reads the dispatcher's figures at each collection, until `stop()`. */
  observe(dispatcher: Dispatcher): void;
  stop(): void;
}

export function routerMetrics(): RouterMetrics {
  if (!metricsActive()) return { attemptEnded: undefined, observe: () => {}, stop: () => {} };
  const meter = dsatMeter();
  const { gauge, counter, observe: readEachCollection } = observableInts(meter);
  const queued = gauge(
    'dsat.router.queue.depth',
    'Tasks queued at the stage, not yet dispatched.',
    '{task}',
  );
  const inFlight = gauge(
    'dsat.router.in_flight',
    'Attempts dispatched and not yet ended.',
    '{task}',
  );
  const workers = gauge('dsat.router.workers', 'Workers connected for the stage.', '{worker}');
  const credit = gauge(
    'dsat.router.credit',
    'Credit the stage’s workers granted and not yet used.',
    '{task}',
  );
  const attempts = counter(
    'dsat.router.attempts',
    'Attempts that ended the stage since the router started: done or failed.',
    '{attempt}',
  );
  const stale = counter(
    'dsat.router.stale_results',
    'Results and failures refused because they named an attempt no longer running.',
    '{report}',
  );
  const duration = meter.createHistogram('dsat.router.attempt.duration', {
    description: 'Seconds from an attempt’s dispatch to its end, by stage and outcome.',
    unit: 's',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS_S },
  });
  // One attributes object per stage and outcome, not one per attempt.
  const byStage = new Map<string, { done: Attributes; failed: Attributes }>();
  const attrs = (stage: string, ok: boolean): Attributes => {
    let a = byStage.get(stage);
    if (!a) {
      a = {
        done: { 'dsat.stage': stage, 'dsat.outcome': 'done' },
        failed: { 'dsat.stage': stage, 'dsat.outcome': 'failed' },
      };
      byStage.set(stage, a);
    }
    return ok ? a.done : a.failed;
  };
  const observers: (() => void)[] = [];
  return {
    attemptEnded: (stage, ok, seconds) => duration.record(seconds, attrs(stage, ok)),
    observe(dispatcher) {
      const callback = (result: BatchObservableResult) => {
        for (const s of dispatcher.load()) {
          const a = { 'dsat.stage': s.stage };
          result.observe(queued, s.queueDepth, a);
          result.observe(inFlight, s.inFlight, a);
          result.observe(workers, s.workers, a);
          result.observe(credit, s.freeCredit, a);
          result.observe(attempts, s.completed, attrs(s.stage, true));
          result.observe(attempts, s.failed, attrs(s.stage, false));
        }
        result.observe(stale, dispatcher.staleReports);
      };
      observers.push(
        readEachCollection([queued, inFlight, workers, credit, attempts, stale], callback),
      );
    },
    stop() {
      for (const remove of observers.splice(0)) remove();
    },
  };
}
