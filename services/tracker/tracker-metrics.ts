import type { BatchObservableResult } from '@opentelemetry/api';
import { MemberKind } from '../../gen/dsat/tracker/v1/tracker';
import { dsatMeter, metricsActive, observableInts } from '../shared/metrics';
import type { Membership } from './membership';
import type { TaskTimers } from './timers';

/**
 * The tracker's metrics, read at each collection: deadlines armed, timers fired and what became
 * of their writes, and the mesh's members by kind. Retries and dead letters are counted where
 * they are committed, by the status service (dsat.task.transitions).
 */
export function observeTracker(timers: TaskTimers, membership: Membership): () => void {
  if (!metricsActive()) return () => {};
  const meter = dsatMeter();
  const { gauge, counter, observe } = observableInts(meter);
  const armed = gauge(
    'dsat.tracker.timers.armed',
    'Deadlines armed: queue, run and async timeouts, retry backoffs.',
    '{timer}',
  );
  const fired = counter('dsat.tracker.timers.fired', 'Deadlines that fired.', '{timer}');
  const writes = counter(
    'dsat.tracker.timer_writes',
    'Writes of fired deadlines, by outcome: applied, lost_race (the task had moved on), refused.',
    '{write}',
  );
  const members = gauge('dsat.tracker.members', 'Live members of the mesh, by kind.', '{member}');
  const callback = (result: BatchObservableResult) => {
    const s = timers.stats;
    result.observe(armed, timers.size);
    result.observe(fired, s.fired);
    result.observe(writes, s.applied, { 'dsat.outcome': 'applied' });
    result.observe(writes, s.lostRace, { 'dsat.outcome': 'lost_race' });
    result.observe(writes, s.refused, { 'dsat.outcome': 'refused' });
    const byKind = new Map<string, number>();
    for (const m of membership.mesh().members) {
      const kind = (MemberKind[m.kind] ?? 'UNKNOWN').replace(/^MEMBER_KIND_/, '');
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    }
    for (const [kind, n] of byKind) result.observe(members, n, { 'dsat.kind': kind });
  };
  return observe([armed, fired, writes, members], callback);
}
