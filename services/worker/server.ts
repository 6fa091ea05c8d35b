import { WorkerServiceDefinition } from '../../gen/dsat/worker/v1/worker';
import { MemberKind, TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { Duration } from '../../gen/google/protobuf/duration';
import type { Worker } from '../../sdk/worker';
import { processSpanHooks } from '../../sdk/process-span';
import { createWorker, WorkerPhase } from '../../sdk/worker';
import type { WorkerConfig } from '../shared/config';
import { ConfigError } from '../shared/config';
import { invalidArgument } from '../shared/errors';
import { createDsatChannel, createDsatClient } from '../shared/grpc-client';
import { tlsSettings } from '../shared/transport-security';
import { serviceEntry, startGrpcServer, stopServerOnShutdown } from '../shared/grpc-server';
import type { Membership } from '../shared/membership';
import { startMembership } from '../shared/membership';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { durationMs, formatMs } from '../shared/proto-duration';
import { withUnimplemented } from '../shared/unimplemented';
import { loadHandlerModule } from './handler-module';
import { workerMetrics } from './worker-metrics';

/** The longest DrainWorker waits before it answers; the drain itself goes on after it. */
export const MAX_DRAIN_WAIT_MS = 3_600_000;

/** DrainWorker's `wait` in ms: a valid duration from 0 to an hour, else INVALID_ARGUMENT. */
export function drainWaitMs(wait: Duration | undefined): number {
  if (wait === undefined) return 0;
  const { seconds, nanos } = wait;
  if (
    !Number.isSafeInteger(seconds) ||
    !Number.isInteger(nanos) ||
    Math.abs(nanos) > 999_999_999 ||
    (seconds > 0 && nanos < 0) ||
    (seconds < 0 && nanos > 0)
  ) {
    throw invalidArgument('wait', 'is not a valid duration');
  }
  const ms = durationMs(wait);
  if (ms < 0) throw invalidArgument('wait', `must not be negative (got -${formatMs(-ms)})`);
  if (ms > MAX_DRAIN_WAIT_MS) {
    throw invalidArgument('wait', `must be at most 1h (got ${formatMs(ms)})`);
  }
  return ms;
}

export interface WorkerHandle extends ServiceHandle {
  /** The worker, or undefined when the process was started without a handler module. */
  readonly worker: Worker | undefined;
}

/**
 * The worker process: runs createWorker with the handlers of `--handler` for `--stages`, and
 * serves WorkerService so that operators can see what it does and drain it.
 */
export async function startWorkerServer(
  config: WorkerConfig,
  deps: ServiceDeps,
): Promise<WorkerHandle> {
  const shutdown = hostShutdown(deps);
  const logger = deps.logger;
  let worker: Worker | undefined;
  const metrics = workerMetrics();
  if (config.handler === '' && config.stages.length > 0) {
    // Stages with nothing to run them would join the mesh as a worker that never takes a task.
    throw new ConfigError([
      {
        key: 'handler',
        flag: '--handler',
        env: 'DSAT_HANDLER',
        message: `is required to serve --stages ${config.stages.join(',')}`,
      },
    ]);
  }
  if (config.handler !== '') {
    const handlers = await loadHandlerModule(config.handler);
    const stages = config.stages.length > 0 ? [...config.stages] : Object.keys(handlers);
    for (const s of stages) {
      if (!handlers[s]) throw new Error(`${config.handler} exports no handler for stage ${s}`);
    }
    const hooks = metrics.timed(processSpanHooks(() => worker?.workerId ?? ''));
    worker = createWorker({
      hooks,
      routers: config.routers,
      handlers,
      stages,
      concurrency: config.concurrency,
      workerId: config.workerId || undefined,
      logger,
      maxReconnectBackoffMs: config.maxReconnectBackoff,
      drainTimeoutMs: config.drainTimeout,
      channel: {
        keepaliveTime: config.keepaliveTime,
        keepaliveTimeout: config.keepaliveTimeout,
        maxMessageSize: config.maxMessageSize,
        ...tlsSettings(config),
      },
    });
  } else {
    logger.warn('no --handler given: this worker process runs no stages');
  }
  const stopMetrics = worker ? metrics.observe(worker) : () => {};
  const startedAt = new Date();
  const idle = {
    workerId: config.workerId,
    stages: [...config.stages],
    concurrency: config.concurrency,
    inFlight: 0,
    completed: 0,
    failed: 0,
    connectedRouter: '',
    startedAt,
    labels: {},
  };
  const server = await startGrpcServer({
    name: 'worker',
    config,
    logger,
    services: [
      serviceEntry(
        WorkerServiceDefinition,
        withUnimplemented(WorkerServiceDefinition, {
          getWorkerInfo: async () => {
            if (!worker) {
              return {
                ...idle,
                phase: shutdown.started
                  ? WorkerPhase.WORKER_PHASE_STOPPED
                  : WorkerPhase.WORKER_PHASE_RUNNING,
              };
            }
            const i = worker.info();
            return {
              workerId: i.workerId,
              stages: [...i.stages],
              concurrency: i.concurrency,
              inFlight: i.inFlight,
              completed: i.completed,
              failed: i.failed,
              connectedRouter: i.connectedRouter,
              phase: i.phase,
              startedAt: i.startedAt,
              labels: { ...i.labels },
            };
          },
          drainWorker: async (req) => {
            // Checked before anything drains: a refused request leaves the worker running.
            const wait = drainWaitMs(req.wait);
            if (!worker) return { inFlight: 0, phase: WorkerPhase.WORKER_PHASE_STOPPED };
            const draining = worker.drain();
            if (wait > 0) {
              let timer: NodeJS.Timeout | undefined;
              await Promise.race([draining, new Promise((r) => (timer = setTimeout(r, wait)))]);
              clearTimeout(timer);
            }
            return { inFlight: worker.info().inFlight, phase: worker.phase };
          },
        }),
      ),
    ],
  });

  const trackerChannel = createDsatChannel(config.trackerAddress, tlsSettings(config));
  let membership: Membership | undefined = worker
    ? startMembership({
        tracker: createDsatClient(TrackerServiceDefinition, trackerChannel, {
          retryMaxAttempts: 1,
        }),
        memberId: worker.workerId,
        kind: MemberKind.MEMBER_KIND_WORKER,
        address: server.address,
        stages: worker.info().stages,
        logger,
      })
    : undefined;

  stopServerOnShutdown(shutdown, 'worker', server);
  shutdown.on('stop-work', 'worker drain', async () => {
    // A mesh that cannot go on records no result: nothing to wait for.
    await worker?.drain(shutdown.urgent ? 0 : config.drainTimeout);
    await membership?.stop();
    membership = undefined;
  });
  shutdown.on('close-store', 'worker channels', () => {
    stopMetrics();
    trackerChannel.close();
  });
  return { name: 'worker', address: server.address, worker, shutdown: () => shutdown.run('stop') };
}
