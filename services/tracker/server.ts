import { MemberKind, TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { TrackerConfig } from '../shared/config';
import { createDsatChannel, createDsatClient } from '../shared/grpc-client';
import { serviceEntry, startGrpcServer, stopServerOnShutdown } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { createDeadLetters } from './dead-letters';
import type { FeedFollower } from './feed-follower';
import { followFeed } from './feed-follower';
import { createMembership } from './membership';
import { observeTracker } from './tracker-metrics';
import type { Clock } from './monotonic-clock';
import { systemClock } from './monotonic-clock';
import { createPipelineCatalog } from './pipeline-catalog';
import { createPipelines } from './pipelines';
import {
  isFeedGap,
  statusCommit,
  statusFeedSource,
  statusPipelineStore,
  statusTaskStore,
} from './status-adapters';
import type { TaskTimers } from './timers';
import { createTaskTimers } from './timers';
import { createTrackerService } from './tracker-service';
import { TrackerStatusDefinition } from './timer-feed';
import { createBatchingSink } from './transition-sink';

export interface TrackerDeps extends ServiceDeps {
  /** The tracker's clock (tests); the system's monotonic and wall clocks by default. */
  readonly clock?: Clock;
}

export interface TrackerHandle extends ServiceHandle {
  readonly timers: TaskTimers;
  readonly follower: FeedFollower;
}

/**
 * The tracker: follows the status feed and holds the timers (re-armed from the store at start),
 * keeps the dead-letter queue, applies pipelines and keeps the members of the mesh. It needs the
 * status service for everything but membership, and keeps trying to reach it in the background,
 * so it starts (and answers Join, Heartbeat, GetMesh) while the store is still away.
 */
export async function startTrackerServer(
  config: TrackerConfig,
  deps: TrackerDeps,
): Promise<TrackerHandle> {
  const shutdown = hostShutdown(deps);
  const logger = deps.logger;
  const clock = deps.clock ?? systemClock;

  const channel = createDsatChannel(config.statusAddress, config);
  const status = createDsatClient(TrackerStatusDefinition, channel);
  const pipelineStore = statusPipelineStore(status);
  const catalog = createPipelineCatalog({ store: pipelineStore, clock });
  const sink = createBatchingSink(statusCommit(status));
  const timers = createTaskTimers({ clock, sink, catalog, logger });
  const membership = createMembership({
    clock,
    memberTtlMs: config.memberTtl,
    onDropped: (m) =>
      logger.info(
        { memberId: m.memberId, kind: MemberKind[m.kind], address: m.address },
        'member silent past its TTL: dropped',
      ),
  });
  const deadLetters = createDeadLetters({ tasks: statusTaskStore(status), sink, pin: timers.pin });
  const pipelines = createPipelines(pipelineStore, catalog);
  const stopMetrics = observeTracker(timers, membership);

  const server = await startGrpcServer({
    name: 'tracker',
    config,
    logger,
    services: [
      serviceEntry(
        TrackerServiceDefinition,
        createTrackerService({ pipelines, deadLetters, membership }),
      ),
    ],
  });

  const abort = new AbortController();
  const follower = followFeed({
    source: statusFeedSource(status),
    timers,
    signal: abort.signal,
    logger,
    isFeedGap,
  });
  // Members are dropped lazily on every call; this sweep only makes the drop visible in the log.
  const sweep = setInterval(() => membership.expire(), Math.max(1_000, config.memberTtl / 2));
  sweep.unref();

  stopServerOnShutdown(shutdown, 'tracker', server);
  shutdown.on('stop-work', 'tracker timers', async () => {
    abort.abort();
    clearInterval(sweep);
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      follower.done.then(() => timers.stop()),
      new Promise((resolve) => (grace = setTimeout(resolve, config.shutdownGrace))),
    ]);
    clearTimeout(grace);
  });
  shutdown.on('close-store', 'tracker status channel', () => {
    stopMetrics();
    channel.close();
  });
  return {
    name: 'tracker',
    address: server.address,
    timers,
    follower,
    shutdown: () => shutdown.run('stop'),
  };
}
