import type { Logger } from './logger';
import type { Shutdown } from './shutdown';
import { createShutdown } from './shutdown';

/** What every startXServer() needs from the process that hosts it. */
export interface ServiceDeps {
  readonly logger: Logger;
  /** Steps are registered here; `dsat up` passes one Shutdown for all four services. */
  readonly shutdown?: Shutdown;
}

/** A running service. */
export interface ServiceHandle {
  readonly name: string;
  readonly address: string;
  /** Runs the service's shutdown (the host's whole shutdown when it was shared). */
  shutdown(): Promise<void>;
}

export function hostShutdown(deps: ServiceDeps): Shutdown {
  return deps.shutdown ?? createShutdown(deps.logger);
}
