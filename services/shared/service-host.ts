import type { Logger } from './logger';
import type { Shutdown } from './shutdown';
import { createShutdown } from './shutdown';

/** What every startXServer() needs from the process that hosts it. */
export interface ServiceDeps {
  readonly logger: Logger;
  /** Steps are registered here; `dsat up` passes one Shutdown for all four services. */
  readonly shutdown?: Shutdown;
  /**
   * A service that cannot go on (its store failed a write) calls this: the host stops and exits
   * non-zero, so that its supervisor restarts it. Without it, the service stops alone.
   */
  readonly onFatal?: (err: Error) => void;
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
