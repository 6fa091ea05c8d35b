import { Command } from 'commander';
import { addConfigOptions, flagValues } from './cli-options';
import type { ConfigOf, ConfigSpec } from './config';
import { ConfigError, loadConfig } from './config';
import type { LogLevel } from './logger';
import { createLogger } from './logger';
import type { ServiceDeps, ServiceHandle } from './service-host';
import { createShutdown, exitOnSignals } from './shutdown';
import { startMetrics } from './metrics';
import { startTelemetry } from './telemetry';
import type { TlsSettings } from './transport-security';
import { checkTlsSettings } from './transport-security';

export type StartService<S extends ConfigSpec> = (
  config: ConfigOf<S>,
  deps: ServiceDeps,
) => Promise<ServiceHandle>;

/** Prints a configuration or start-up failure as one clear message and exits non-zero. */
export function exitWithError(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`dsat: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`dsat: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

/** The command that runs one service in this process: `dsat status`, `dsat router`, … */
export function serviceCommand<S extends ConfigSpec>(
  name: string,
  spec: S,
  start: StartService<S>,
  description: string,
): Command {
  const command = new Command(name).description(description);
  addConfigOptions(command, spec);
  command.action(async (opts: Record<string, unknown>) => {
    let config: ConfigOf<S>;
    try {
      config = loadConfig(spec, flagValues(spec, opts));
      checkTlsSettings(config as TlsSettings);
    } catch (err) {
      exitWithError(err);
    }
    const level = (config as { logLevel?: LogLevel }).logLevel ?? 'info';
    const logger = createLogger(name, level);
    const shutdown = createShutdown(logger);
    exitOnSignals(shutdown, logger);
    // Exports only when the standard OTEL_* variables ask for it; a no-op otherwise.
    const telemetry = startTelemetry({
      serviceName: `dsat-${name}`,
      // Only a worker runs user code, whose spans must follow its awaits.
      contextAcrossAwaits: name === 'worker',
    });
    shutdown.on('flush-telemetry', 'telemetry', () => telemetry.shutdown());
    try {
      const served = config as { metricsPort?: number; host?: string };
      const metrics = await startMetrics({
        serviceName: `dsat-${name}`,
        prometheusPort: served.metricsPort,
        prometheusHost: served.host,
      });
      shutdown.on('flush-telemetry', 'metrics', () => metrics.shutdown());
      const onFatal = (err: Error) =>
        void shutdown.run('fatal error', { urgent: true }).finally(() => exitWithError(err));
      const handle = await start(config, { logger, shutdown, onFatal });
      // Before "listening on", which `dsat up --processes` reads as the child's start.
      if (metrics.prometheusUrl) {
        process.stdout.write(`${name} metrics at ${metrics.prometheusUrl}\n`);
      }
      process.stdout.write(`${name} listening on ${handle.address}\n`);
    } catch (err) {
      await shutdown.run('start-up failed');
      exitWithError(err);
    }
  });
  return command;
}

/** Entry of `services/<name>/main.ts`: the service alone as its own process. */
export function runServiceMain<S extends ConfigSpec>(
  name: string,
  spec: S,
  start: StartService<S>,
  description: string,
): void {
  serviceCommand(name, spec, start, description).parseAsync(process.argv).catch(exitWithError);
}
