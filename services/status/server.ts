import fs from 'node:fs';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { StatusConfig } from '../shared/config';
import { serviceEntry, startGrpcServer } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { withUnimplemented } from '../shared/unimplemented';

export async function startStatusServer(
  config: StatusConfig,
  deps: ServiceDeps,
): Promise<ServiceHandle> {
  const shutdown = hostShutdown(deps);
  fs.mkdirSync(config.dataDir, { recursive: true });
  const server = await startGrpcServer({
    name: 'status',
    config,
    logger: deps.logger,
    services: [
      serviceEntry(StatusServiceDefinition, withUnimplemented(StatusServiceDefinition, {})),
    ],
  });
  shutdown.on('not-serving', 'status health', () => server.setServing(false));
  shutdown.on('terminate-streams', 'status streams', () => server.terminateStreams());
  shutdown.on('server', 'status server', () => server.stop());
  return { name: 'status', address: server.address, shutdown: () => shutdown.run('stop') };
}
