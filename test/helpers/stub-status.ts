import type { StatusServiceImplementation } from '../../gen/dsat/status/v1/status';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { FlagValues } from '../../services/shared/config';
import { loadConfig, statusConfigSpec } from '../../services/shared/config';
import type { GrpcServer } from '../../services/shared/grpc-server';
import { serviceEntry, startGrpcServer } from '../../services/shared/grpc-server';
import { createLogger } from '../../services/shared/logger';
import { withUnimplemented } from '../../services/shared/unimplemented';

/**
 * A real server (the factory every service uses, on a free port, with a status service's `flags`)
 * whose GetStoreStats and DeleteTasks only record that they ran: for what the server does before
 * a handler (TLS, tokens, limits), a refused call must leave `ran` as it was.
 */
export async function startStubStatus(
  flags: FlagValues,
): Promise<{ server: GrpcServer; ran: string[] }> {
  const ran: string[] = [];
  const handlers: Partial<StatusServiceImplementation> = {
    getStoreStats: () => {
      ran.push('getStoreStats');
      return Promise.resolve({});
    },
    deleteTasks: () => {
      ran.push('deleteTasks');
      return Promise.resolve({ deletedCount: 0 });
    },
  };
  const server = await startGrpcServer({
    name: 'stub',
    config: loadConfig(statusConfigSpec, { port: '0', shutdownGrace: '1000', ...flags }, {}),
    logger: createLogger('stub', 'silent'),
    services: [
      serviceEntry(StatusServiceDefinition, withUnimplemented(StatusServiceDefinition, handlers)),
    ],
  });
  return { server, ran };
}
