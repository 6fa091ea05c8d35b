import { Command } from 'commander';
import {
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
  workerConfigSpec,
} from '../services/shared/config';
import { exitWithError, serviceCommand } from '../services/shared/run-service';
import { startRouterServer } from '../services/router/server';
import { startStatusServer } from '../services/status/server';
import { readPipelineFile } from '../services/tracker/pipeline-file';
import { startTrackerServer } from '../services/tracker/server';
import { startWorkerServer } from '../services/worker/server';
import { addMeshOptions } from './command-context';
import { taskCommands } from './commands/task-commands';
import { trackerCommands } from './commands/tracker-commands';
import { benchCommand } from './commands/bench';
import { upCommand } from './commands/up';
import { version } from '../package.json';

const program = new Command('dsat')
  .description('dsat runs multi-stage task pipelines on a mesh of gRPC services.')
  .version(version, '-V, --version', 'print the version of dsat')
  .showHelpAfterError()
  .addCommand(upCommand())
  .addCommand(
    serviceCommand(
      'status',
      statusConfigSpec,
      startStatusServer,
      'Run the status service alone: the LevelDB task store, transitions and watches.',
    ),
  )
  .addCommand(
    serviceCommand(
      'router',
      routerConfigSpec,
      startRouterServer,
      'Run a router alone: submits, ready queues, worker streams.',
    ),
  )
  .addCommand(
    serviceCommand(
      'tracker',
      trackerConfigSpec,
      startTrackerServer,
      'Run the tracker alone: timers, retries, dead letters, pipelines, membership.',
    ),
  )
  .addCommand(
    serviceCommand(
      'worker',
      workerConfigSpec,
      startWorkerServer,
      'Run a worker process: stage handlers for assigned tasks.',
    ),
  );

addMeshOptions(program);
for (const c of [...taskCommands(), ...trackerCommands(readPipelineFile), benchCommand()]) {
  program.addCommand(c);
}
// `dsat ... | head` closes stdout early; that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});
program.addHelpText(
  'after',
  `
Examples:
  $ dsat up                                  # the embedded mesh with a demo pipeline
  $ dsat up --processes                      # the same, each service its own process
  $ dsat submit demo '{"text":"hi"}' --follow
  $ dsat tasks --state running
  $ dsat get TASK_ID --history
  $ dsat trace TASK_ID
  $ dsat mesh --watch`,
);

program.parseAsync(process.argv).catch(exitWithError);
