import { RouterServiceDefinition } from '../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../gen/dsat/status/v1/status';
import { TrackerServiceDefinition } from '../gen/dsat/tracker/v1/tracker';
import type { CliConfig } from '../services/shared/config';
import type { DsatClient } from '../services/shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../services/shared/grpc-client';

/** The gRPC clients a command needs, made on first use. */
export interface MeshClients {
  readonly router: DsatClient<typeof RouterServiceDefinition>;
  readonly status: DsatClient<typeof StatusServiceDefinition>;
  readonly tracker: DsatClient<typeof TrackerServiceDefinition>;
}

export function meshClients(config: CliConfig): MeshClients {
  const settings = { deadline: config.timeout, retryMaxAttempts: 2 };
  let router: MeshClients['router'] | undefined;
  let status: MeshClients['status'] | undefined;
  let tracker: MeshClients['tracker'] | undefined;
  return {
    get router() {
      return (router ??= createDsatClient(
        RouterServiceDefinition,
        createDsatChannel(config.router, config),
        settings,
      ));
    },
    get status() {
      return (status ??= createDsatClient(
        StatusServiceDefinition,
        createDsatChannel(config.status, config),
        settings,
      ));
    },
    get tracker() {
      return (tracker ??= createDsatClient(
        TrackerServiceDefinition,
        createDsatChannel(config.tracker, config),
        settings,
      ));
    },
  };
}
