import { exitWithError } from '../services/shared/run-service';
import { isServiceName, serviceProgram } from './service-commands';

// `dsat status|router|tracker|worker ...` parses with its one command (service-commands.ts).
const command = process.argv[2];
if (isServiceName(command)) {
  serviceProgram(command).parseAsync(process.argv).catch(exitWithError);
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('./program');
}
