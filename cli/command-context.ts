import type { Command } from 'commander';
import type { CliConfig } from '../services/shared/config';
import { cliConfigSpec, loadConfig } from '../services/shared/config';
import { flagValues } from '../services/shared/cli-options';
import { exitWithError } from '../services/shared/run-service';
import type { MeshClients } from './mesh-clients';
import { checkTlsSettings } from '../services/shared/transport-security';
import { meshClients } from './mesh-clients';
import { describeError, exitWhenFlushed } from './output';

export interface CommandContext {
  readonly config: CliConfig;
  readonly clients: MeshClients;
  /** `--json`: machine output. */
  readonly json: boolean;
}

/** A command line that cannot be carried out as given: exits 2, like a bad flag, nothing sent. */
export class UsageError extends Error {}

/** Global options of every client command. */
export function addMeshOptions(program: Command): Command {
  return program
    .option(
      '--router <host:port>',
      'Router address [env DSAT_ROUTER_ADDRESS, default 127.0.0.1:7402]',
    )
    .option(
      '--status <host:port>',
      'Status address [env DSAT_STATUS_ADDRESS, default 127.0.0.1:7401]',
    )
    .option(
      '--tracker <host:port>',
      'Tracker address [env DSAT_TRACKER_ADDRESS, default 127.0.0.1:7403]',
    )
    .option(
      '--traces <url>',
      'Span receiver of dsat up [env DSAT_TRACES_URL, default http://127.0.0.1:7418]',
    )
    .option('--timeout <duration>', 'Deadline of each call [env DSAT_TIMEOUT, default 10s]')
    .option('--tls-ca <file>', 'Call the mesh over TLS, trusting these PEM CAs [env DSAT_TLS_CA]')
    .option(
      '--tls-cert <file>',
      'PEM certificate shown to a mesh that asks (mTLS) [env DSAT_TLS_CERT]',
    )
    .option('--tls-key <file>', 'PEM key of --tls-cert [env DSAT_TLS_KEY]')
    .option(
      '--auth-token-file <file>',
      'Show the bearer token (JWT) in this file on every call; needs --tls-ca [env DSAT_AUTH_TOKEN_FILE]',
    )
    .option('--json', 'Print JSON for scripts instead of tables');
}

/**
 * Wraps a command's action: reads the global options, connects, and turns any failure into one
 * clear line on stderr and exit code 1.
 */
export function meshAction<A extends unknown[]>(
  run: (ctx: CommandContext, ...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const command = args[args.length - 1] as Command;
    const opts = command.optsWithGlobals<Record<string, unknown>>();
    let config: CliConfig;
    try {
      config = loadConfig(cliConfigSpec, flagValues(cliConfigSpec, opts));
      checkTlsSettings(config);
    } catch (err) {
      exitWithError(err);
    }
    try {
      await run({ config, clients: meshClients(config), json: opts.json === true }, ...args);
    } catch (err) {
      process.stderr.write(`dsat: ${describeError(err)}\n`);
      process.exitCode = err instanceof UsageError ? 2 : 1;
    }
    // The command's own exit code when it set one (submit --follow of a task that failed); the
    // open channels would otherwise keep the process alive.
    await exitWhenFlushed();
  };
}
