import type { BatchObservableResult } from '@opentelemetry/api';
import { dsatMeter, metricsActive, observableInts, attributeSets } from '../shared/metrics';
import type { Dispatcher } from './dispatcher';

/**
 * A router's metrics, per stage it serves: what waits, what runs, the credit its workers grant,
 * attempts ended and their durations, results refused as stale, next stages dispatched ahead. The
 * gauges and counters are read from the dispatcher when scraped; only the duration is recorded as
 * attempts end.
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
  const { gauge, counter, seconds, observe: readEachCollection } = observableInts(meter);
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
  const ahead = counter(
    'dsat.router.dispatched_ahead',
    'Next stages dispatched before their move was committed, by how the move ended: committed, or refused by the store and the attempt called off.',
    '{attempt}',
  );
  const duration = seconds(
    'dsat.router.attempt.duration',
    'Seconds from an attempt’s dispatch to its end, by stage and outcome.',
  );
  const stageOutcome = attributeSets(['dsat.stage', 'dsat.outcome']);
  const attrs = (stage: string, ok: boolean) => stageOutcome(stage, ok ? 'done' : 'failed');
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
        result.observe(ahead, dispatcher.ahead.committed, { 'dsat.outcome': 'committed' });
        result.observe(ahead, dispatcher.ahead.calledOff, { 'dsat.outcome': 'called_off' });
      };
      observers.push(
        readEachCollection([queued, inFlight, workers, credit, attempts, stale, ahead], callback),
      );
    },
    stop() {
      for (const remove of observers.splice(0)) remove();
    },
  };
}
