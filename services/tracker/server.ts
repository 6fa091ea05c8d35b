import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { TrackerConfig } from '../shared/config';
import { serviceEntry, startGrpcServer } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { withUnimplemented } from '../shared/unimplemented';

export async function startTrackerServer(
  config: TrackerConfig,
  deps: ServiceDeps,
): Promise<ServiceHandle> {
  const shutdown = hostShutdown(deps);
  const server = await startGrpcServer({
    name: 'tracker',
    config,
    logger: deps.logger,
    services: [
      serviceEntry(TrackerServiceDefinition, withUnimplemented(TrackerServiceDefinition, {})),
    ],
  });
  shutdown.on('not-serving', 'tracker health', () => server.setServing(false));
  shutdown.on('terminate-streams', 'tracker streams', () => server.terminateStreams());
  shutdown.on('server', 'tracker server', () => server.stop());
  return { name: 'tracker', address: server.address, shutdown: () => shutdown.run('stop') };
}
