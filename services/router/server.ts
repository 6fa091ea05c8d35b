import crypto from 'node:crypto';
import { delay } from 'abort-controller-x';
import { Status } from 'nice-grpc-common';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { Task } from '../../gen/dsat/task/v1/task';
import { MemberKind, TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { RouterConfig } from '../shared/config';
import { createDsatChannel, createDsatClient } from '../shared/grpc-client';
import { tlsSettings } from '../shared/transport-security';
import { serviceEntry, startGrpcServer, stopServerOnShutdown } from '../shared/grpc-server';
import type { Membership } from '../shared/membership';
import { startMembership } from '../shared/membership';
import { openBidiStream, rawClient } from '../shared/raw-stream';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { routerMetrics } from './router-metrics';
import { Dispatcher } from './dispatcher';
import type { HeldTaskInit } from './held-task';
import { createFeedFollower, FOLLOWED_STATES } from './feed-follower';
import { createPipelineRegistry } from './pipeline-registry';
import { rebuildQueues } from './queue-rebuild';
import { FAILURE_REASONS } from './retry-policy';
import { createRouterService } from './router-service';
import { createStageForwarder } from './stage-forwarder';
import { createStatusWriter } from './status-writer';
import { TaskIntake } from './task-intake';
import { createTransitionIds } from './transition-write';
import type { WorkerSession } from './worker-session';

/**
 * Most bytes of writes in one message to the status service. Writes wait while a message is in
 * flight, so under load every message is full: 2 MiB ones (and commits as big) kept the status
 * service's and the router's peaks ~10 MB higher than 1 MiB ones, for no speed.
 */
const MAX_WRITE_MESSAGE_BYTES = 1024 * 1024;

/** A running router, with its dispatcher for tests and operators' tools. */
export interface RouterHandle extends ServiceHandle {
  readonly routerId: string;
  readonly dispatcher: Dispatcher;
  /** Resolves once the ready queues were rebuilt from the store and the feed is followed. */
  readonly ready: Promise<void>;
  /** Writes to the status service queued or in flight. */
  readonly pendingWrites: number;
}

export async function startRouterServer(
  config: RouterConfig,
  deps: ServiceDeps,
): Promise<RouterHandle> {
  const shutdown = hostShutdown(deps);
  const logger = deps.logger;
  const routerId = config.routerId || `router-${crypto.randomUUID().slice(0, 8)}`;
  const ids = createTransitionIds(routerId, crypto.randomBytes(4).toString('hex'));
  const stages = new Set(config.stages);
  const serves = (stage: string) => stages.size === 0 || stages.has(stage);

  const channelSettings = {
    keepaliveTime: config.keepaliveTime,
    keepaliveTimeout: config.keepaliveTimeout,
    maxMessageSize: config.maxMessageSize,
    ...tlsSettings(config),
  };
  const statusChannel = createDsatChannel(config.statusAddress, channelSettings);
  const status = createDsatClient(StatusServiceDefinition, statusChannel);
  const raw = rawClient(config.statusAddress, statusChannel);
  const writer = createStatusWriter({
    connect: () =>
      openBidiStream(
        raw,
        StatusServiceDefinition.fullName,
        StatusServiceDefinition.methods.applyTransitions,
      ),
    // Writes wait unsent (withdrawable) until a connection is up, rather than on a dead stream.
    ready: () =>
      new Promise<void>((resolve, reject) =>
        raw.waitForReady(Date.now() + 5_000, (err) => (err ? reject(err) : resolve())),
      ),
    logger,
    window: config.statusWindow,
    maxMessageBytes: Math.min(
      MAX_WRITE_MESSAGE_BYTES,
      Math.max(64 * 1024, Math.floor(config.maxMessageSize / 2)),
    ),
  });
  const readTask = async (taskId: string): Promise<Task | undefined> => {
    try {
      return (await status.getTask({ taskId })).task;
    } catch (err) {
      if ((err as { code?: unknown }).code === Status.NOT_FOUND) return undefined;
      throw err;
    }
  };
  const pipelines = createPipelineRegistry(
    async (name, version) => (await status.getPipeline({ name, version })).pipeline,
    { ttlMs: config.pipelineCacheTtl },
  );

  const trackerChannel = createDsatChannel(config.trackerAddress, channelSettings);
  const tracker = createDsatClient(TrackerServiceDefinition, trackerChannel, {
    retryMaxAttempts: 1,
  });
  let address = '';
  const forwarder = createStageForwarder({
    tracker,
    selfAddress: () => address,
    logger,
    channel: channelSettings,
  });
  const metrics = routerMetrics();
  const dispatcher = new Dispatcher({
    onAttemptEnded: metrics.attemptEnded,
    writer,
    ids,
    logger,
    strategy: config.dispatch,
    serves,
    forward: (tasks) => forwarder.forward(tasks),
    maxPayloadSize: config.maxPayloadSize,
    progressCheckpointMs: config.progressCheckpoint,
  });
  for (const s of stages) dispatcher.ensureStage(s);
  metrics.observe(dispatcher);
  const accept = (init: HeldTaskInit) => {
    if (serves(init.stage.name)) dispatcher.enqueue(init);
    else forwarder.forward([init]);
  };
  const intake = new TaskIntake({
    writer,
    ids,
    pipelines,
    maxPayloadSize: config.maxPayloadSize,
    maxWaitingWriteBytes: config.maxWaitingWriteBytes,
    logger,
    accept,
    readTask,
  });
  const sessions = new Set<WorkerSession>();
  const listPage = (pageToken: string) =>
    status.listUnfinishedTasks({ stages: [...stages], pageSize: 1000, pageToken });
  const rebuild = async () =>
    (await rebuildQueues({ listPage, pipelines, dispatcher, serves, logger })).revision;
  const feed = createFeedFollower({
    watch: (fromRevision, signal) =>
      status.watchEvents(
        {
          filter: {
            states: FOLLOWED_STATES,
            pipeline: '',
            stage: stages.size === 1 ? [...stages][0]! : '',
            actionKey: '',
          },
          fromRevision,
          // Our own writes come back as outcomes: the feed need not carry them here too.
          skipTransitionIdPrefix: ids.prefix,
        },
        { signal },
      ),
    readTask,
    pipelines,
    dispatcher,
    ids,
    serves,
    logger,
    rebuild,
  });

  const server = await startGrpcServer({
    name: 'router',
    config,
    logger,
    services: [
      serviceEntry(
        RouterServiceDefinition,
        createRouterService({
          routerId,
          intake,
          dispatcher,
          cancel: { writer, ids, dispatcher, readTask },
          completion: {
            writer,
            ids,
            pipelines,
            readTask,
            maxPayloadSize: config.maxPayloadSize,
            accept,
          },
          session: {
            dispatcher,
            routerId,
            heartbeatIntervalMs: config.heartbeatInterval,
            serves,
            logger,
            sessions,
          },
          forward: {
            dispatcher,
            pipelines,
            serves,
            maxPayloadSize: config.maxPayloadSize,
            readTask,
            confirm: (init) => feed.confirmForward(init),
          },
          maxSubmitPending: config.maxSubmitPending,
          logger,
        }),
        ['connectWorker', 'submitTasks'],
      ),
    ],
  });
  address = server.address;

  // The queues are rebuilt in the background: the store may come up after the router.
  const startup = new AbortController();
  const ready = (async () => {
    let backoff = 200;
    for (;;) {
      try {
        const revision = await rebuild();
        feed.start(revision);
        return;
      } catch (err) {
        if (startup.signal.aborted) return;
        logger.warn(
          { err: (err as Error).message, retryInMs: backoff },
          'cannot rebuild the queues yet',
        );
        await delay(startup.signal, backoff).catch(() => undefined);
        if (startup.signal.aborted) return;
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  })();

  let membership: Membership | undefined = startMembership({
    tracker,
    memberId: routerId,
    kind: MemberKind.MEMBER_KIND_ROUTER,
    address: server.address,
    stages: [...stages],
    load: () => dispatcher.load(),
    logger,
  });

  stopServerOnShutdown(shutdown, 'router', server);
  shutdown.on('stop-work', 'router dispatch', async () => {
    startup.abort();
    intake.stop();
    dispatcher.stop(FAILURE_REASONS.routerShutdown);
    // Nothing dispatches any more: stop reading the feed before the status service (in the same
    // process under `dsat up`) ends its streams, which the follower would retry.
    await feed.stop();
    await membership?.stop();
    membership = undefined;
  });
  shutdown.on('close-store', 'router status link', async () => {
    metrics.stop();
    forwarder.close();
    await writer.close(config.shutdownGrace);
    raw.close();
    statusChannel.close();
    trackerChannel.close();
  });
  return {
    name: 'router',
    address: server.address,
    routerId,
    dispatcher,
    ready,
    get pendingWrites() {
      return writer.pending;
    },
    shutdown: () => shutdown.run('stop'),
  };
}
