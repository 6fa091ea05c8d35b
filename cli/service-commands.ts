import { Command } from 'commander';
import type * as RouterServer from '../services/router/server';
import type * as StatusServer from '../services/status/server';
import type * as TrackerServer from '../services/tracker/server';
import type * as WorkerServer from '../services/worker/server';
import {
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
  workerConfigSpec,
} from '../services/shared/config';
import type { ConfigSpec } from '../services/shared/config';
import type { StartService } from '../services/shared/run-service';
import { serviceCommand } from '../services/shared/run-service';
import { version } from '../package.json';

/*
 * Each service's code is loaded when its command runs, so that a service process loads that
 * service alone: all four, `up` and the benchmark added ~4 MB to each idle process of a mesh.
 */

/** A service command whose `start` is looked up, and its module loaded, when the command runs. */
function lazyService<S extends ConfigSpec>(
  name: string,
  spec: S,
  description: string,
  load: () => StartService<S>,
): () => Command {
  return () => serviceCommand(name, spec, (config, deps) => load()(config, deps), description);
}

/* eslint-disable @typescript-eslint/no-require-imports */
const SERVICES = {
  status: lazyService(
    'status',
    statusConfigSpec,
    'Run the status service alone: the LevelDB task store, transitions and watches.',
    () => (require('../services/status/server') as typeof StatusServer).startStatusServer,
  ),
  router: lazyService(
    'router',
    routerConfigSpec,
    'Run a router alone: submits, ready queues, worker streams.',
    () => (require('../services/router/server') as typeof RouterServer).startRouterServer,
  ),
  tracker: lazyService(
    'tracker',
    trackerConfigSpec,
    'Run the tracker alone: timers, retries, dead letters, pipelines, membership.',
    () => (require('../services/tracker/server') as typeof TrackerServer).startTrackerServer,
  ),
  worker: lazyService(
    'worker',
    workerConfigSpec,
    'Run a worker process: stage handlers for assigned tasks.',
    () => (require('../services/worker/server') as typeof WorkerServer).startWorkerServer,
  ),
};
/* eslint-enable @typescript-eslint/no-require-imports */

export type ServiceName = keyof typeof SERVICES;

export function isServiceName(name: string | undefined): name is ServiceName {
  return name !== undefined && Object.prototype.hasOwnProperty.call(SERVICES, name);
}

/** The four service commands, for the whole CLI. */
export function serviceCommands(): Command[] {
  return Object.values(SERVICES).map((make) => make());
}

/** `dsat` with one service command: what a service process parses its arguments with. */
export function serviceProgram(name: ServiceName): Command {
  return dsatProgram().addCommand(SERVICES[name]());
}

/** The program every command hangs from: its name, description and version flag. */
export function dsatProgram(): Command {
  return new Command('dsat')
    .description('dsat runs multi-stage task pipelines on a mesh of gRPC services.')
    .version(version, '-V, --version', 'print the version of dsat')
    .showHelpAfterError();
}
