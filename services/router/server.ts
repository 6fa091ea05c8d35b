import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import type { RouterConfig } from '../shared/config';
import { serviceEntry, startGrpcServer } from '../shared/grpc-server';
import type { ServiceDeps, ServiceHandle } from '../shared/service-host';
import { hostShutdown } from '../shared/service-host';
import { withUnimplemented } from '../shared/unimplemented';

export async function startRouterServer(
  config: RouterConfig,
  deps: ServiceDeps,
): Promise<ServiceHandle> {
  const shutdown = hostShutdown(deps);
  const server = await startGrpcServer({
    name: 'router',
    config,
    logger: deps.logger,
    services: [
      serviceEntry(RouterServiceDefinition, withUnimplemented(RouterServiceDefinition, {})),
    ],
  });
  shutdown.on('not-serving', 'router health', () => server.setServing(false));
  shutdown.on('terminate-streams', 'router streams', () => server.terminateStreams());
  shutdown.on('server', 'router server', () => server.stop());
  return { name: 'router', address: server.address, shutdown: () => shutdown.run('stop') };
}
