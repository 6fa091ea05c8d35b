import crypto from 'node:crypto';
import { WorkerPhase, WorkerServiceDefinition } from '../../gen/dsat/worker/v1/worker';
import type { WorkerConfig } from '../shared/config';
import { serviceEntry, startGrpcServer } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { withUnimplemented } from '../shared/unimplemented';

export async function startWorkerServer(
  config: WorkerConfig,
  deps: ServiceDeps,
): Promise<ServiceHandle> {
  const shutdown = hostShutdown(deps);
  const workerId = config.workerId || `worker-${crypto.randomUUID().slice(0, 8)}`;
  const startedAt = new Date();
  const server = await startGrpcServer({
    name: 'worker',
    config,
    logger: deps.logger,
    services: [
      serviceEntry(
        WorkerServiceDefinition,
        withUnimplemented(WorkerServiceDefinition, {
          getWorkerInfo: () =>
            Promise.resolve({
              workerId,
              stages: [...config.stages],
              concurrency: config.concurrency,
              phase: shutdown.started
                ? WorkerPhase.WORKER_PHASE_STOPPED
                : WorkerPhase.WORKER_PHASE_RUNNING,
              startedAt,
            }),
        }),
      ),
    ],
  });
  shutdown.on('not-serving', 'worker health', () => server.setServing(false));
  shutdown.on('terminate-streams', 'worker streams', () => server.terminateStreams());
  shutdown.on('server', 'worker server', () => server.stop());
  return { name: 'worker', address: server.address, shutdown: () => shutdown.run('stop') };
}
