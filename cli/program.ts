import type { Command } from 'commander';
import { exitWithError } from '../services/shared/run-service';
import { readPipelineFile } from '../services/tracker/pipeline-file';
import { addMeshOptions } from './command-context';
import { taskCommands } from './commands/task-commands';
import { trackerCommands } from './commands/tracker-commands';
import { benchCommand } from './commands/bench';
import { upCommand } from './commands/up';
import { dsatProgram, serviceCommands } from './service-commands';

const program = dsatProgram().addCommand(upCommand());
for (const c of serviceCommands()) program.addCommand(c);

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

/** A usage error (unknown option, bad value, missing argument) exits 2, as bad config does. */
function usageErrorsExitTwo(command: Command): void {
  command.exitOverride((err) => process.exit(err.exitCode === 1 ? 2 : err.exitCode));
  for (const sub of command.commands) usageErrorsExitTwo(sub);
}
usageErrorsExitTwo(program);

program.parseAsync(process.argv).catch(exitWithError);
