import path from 'node:path';
import { Command, Option } from 'commander';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import { startOtlpReceiver } from '../../services/shared/otlp-receiver';
import { SpanStore } from '../../services/shared/span-store';
import { startTelemetry } from '../../services/shared/telemetry';
import { readPipelineFile } from '../../services/tracker/pipeline-file';
import type { ConfigProblem, ConfigSpec, FlagValues } from '../../services/shared/config';
import {
  ConfigError,
  DEFAULT_PORTS,
  loadConfig,
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
  workerConfigSpec,
} from '../../services/shared/config';
import type { LogLevel } from '../../services/shared/logger';
import { createLogger } from '../../services/shared/logger';
import { exitWithError } from '../../services/shared/run-service';
import type { ServiceHandle } from '../../services/shared/service-host';
import { createShutdown, exitOnSignals } from '../../services/shared/shutdown';
import { startRouterServer } from '../../services/router/server';
import { startStatusServer } from '../../services/status/server';
import { startTrackerServer } from '../../services/tracker/server';
import { startWorkerServer } from '../../services/worker/server';

interface UpOptions {
  dataDir?: string;
  host?: string;
  statusPort?: string;
  routerPort?: string;
  trackerPort?: string;
  workerPort?: string;
  sync?: boolean;
  logLevel?: string;
  demo?: boolean;
  traceReceiver?: boolean;
  traceReceiverPort?: string;
}

const DEMO_PIPELINE = path.join(__dirname, '../../deploy/k8s/pipelines/demo.yaml');
const DEMO_HANDLERS = path.join(__dirname, '../../deploy/demo-handlers.js');

function defined(values: Record<string, string | boolean | undefined>): FlagValues {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
}

/** Loads every service's config first, so one message lists every bad value of every service. */
function loadAll<S extends ConfigSpec>(
  svc: string,
  spec: S,
  flags: FlagValues,
  problems: ConfigProblem[],
) {
  try {
    return loadConfig(spec, flags);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) {
      if (problems.some((q) => q.env === p.env)) continue;
      // `up` names each service's port flag after the service.
      problems.push(p.key === 'port' ? { ...p, flag: `--${svc}-port` } : p);
    }
    return undefined;
  }
}

export function upCommand(): Command {
  return new Command('up')
    .description(
      'Run the embedded mesh: status, router, tracker and worker servers in this process, with the LevelDB store in ./.dsat.',
    )
    .option('--data-dir <dir>', 'Directory of the LevelDB store [env DSAT_DATA_DIR]', undefined)
    .option('--host <host>', 'Interface to listen on [env DSAT_HOST, default 127.0.0.1]')
    .option(
      '--status-port <port>',
      `Status port [env DSAT_STATUS_PORT, default ${DEFAULT_PORTS.status}]`,
    )
    .option(
      '--router-port <port>',
      `Router port [env DSAT_ROUTER_PORT, default ${DEFAULT_PORTS.router}]`,
    )
    .option(
      '--tracker-port <port>',
      `Tracker port [env DSAT_TRACKER_PORT, default ${DEFAULT_PORTS.tracker}]`,
    )
    .option(
      '--worker-port <port>',
      `Worker port [env DSAT_WORKER_PORT, default ${DEFAULT_PORTS.worker}]`,
    )
    .addOption(new Option('--sync', 'fsync every commit (default) [env DSAT_SYNC]'))
    .addOption(
      new Option(
        '--no-sync',
        'Do not fsync commits: faster, loses the newest commits on power loss',
      ),
    )
    .option(
      '--log-level <level>',
      'Level of the JSON logs on stderr [env DSAT_LOG_LEVEL, default warn]',
    )
    .option('--no-demo', 'Do not apply the demo pipeline nor run its workers')
    .option('--no-trace-receiver', 'Do not keep spans for `dsat trace`')
    .option('--trace-receiver-port <port>', 'Port of the OTLP/HTTP span receiver', '7418')
    .addHelpText(
      'after',
      '\nExamples:\n  $ dsat up\n  $ dsat up --data-dir /tmp/dsat --router-port 0\n  $ DSAT_LOG_LEVEL=debug dsat up',
    )
    .action(async (opts: UpOptions) => {
      const common = {
        host: opts.host,
        logLevel: opts.logLevel ?? process.env.DSAT_LOG_LEVEL ?? 'warn',
      };
      const problems: ConfigProblem[] = [];
      const statusConfig = loadAll(
        'status',
        statusConfigSpec,
        defined({ ...common, port: opts.statusPort, dataDir: opts.dataDir, sync: opts.sync }),
        problems,
      );
      const trackerFlags = defined({ ...common, port: opts.trackerPort });
      const routerFlags = defined({ ...common, port: opts.routerPort });
      const workerFlags = defined({
        ...common,
        port: opts.workerPort ?? process.env.DSAT_WORKER_PORT ?? String(DEFAULT_PORTS.worker),
        ...(opts.demo === false ? {} : { handler: DEMO_HANDLERS, stages: 'parse,hash,upper' }),
      });
      const trackerCheck = loadAll('tracker', trackerConfigSpec, trackerFlags, problems);
      const routerCheck = loadAll('router', routerConfigSpec, routerFlags, problems);
      const workerCheck = loadAll('worker', workerConfigSpec, workerFlags, problems);
      if (problems.length > 0 || !statusConfig || !trackerCheck || !routerCheck || !workerCheck) {
        exitWithError(new ConfigError(problems));
      }

      const logger = createLogger('dsat', statusConfig.logLevel as LogLevel);
      const shutdown = createShutdown(logger);
      exitOnSignals(shutdown, logger);
      const deps = (name: string) => ({ logger: logger.child({ service: name }), shutdown });
      const print = (h: ServiceHandle) =>
        process.stdout.write(`  ${h.name.padEnd(8)} ${h.address}\n`);
      try {
        process.stdout.write('dsat is starting:\n');
        if (opts.traceReceiver !== false) {
          const spans = new SpanStore();
          const receiver = await startOtlpReceiver(spans, {
            host: statusConfig.host,
            port: Number(opts.traceReceiverPort ?? 7418),
            logger,
          });
          const telemetry = startTelemetry({
            serviceName: 'dsat',
            spanProcessors: [spans.processor()],
          });
          shutdown.on('server', 'span receiver', () => receiver.close());
          shutdown.on('flush-telemetry', 'telemetry', () => telemetry.shutdown());
          process.stdout.write(`  ${'traces'.padEnd(8)} ${receiver.url}\n`);
        }
        const status = await startStatusServer(statusConfig, deps('status'));
        print(status);
        const linked = { statusAddress: status.address };
        const tracker = await startTrackerServer(
          loadConfig(trackerConfigSpec, { ...trackerFlags, ...linked }),
          deps('tracker'),
        );
        print(tracker);
        const router = await startRouterServer(
          loadConfig(routerConfigSpec, {
            ...routerFlags,
            ...linked,
            trackerAddress: tracker.address,
          }),
          deps('router'),
        );
        print(router);
        if (opts.demo !== false) {
          const trackerClient = createDsatClient(
            TrackerServiceDefinition,
            createDsatChannel(tracker.address),
          );
          const applied = await trackerClient.applyPipeline({
            pipeline: readPipelineFile(DEMO_PIPELINE),
          });
          process.stdout.write(
            `  ${'demo'.padEnd(8)} pipeline ${applied.pipeline?.name} v${applied.pipeline?.version}: parse → hash → upper\n`,
          );
        }
        const worker = await startWorkerServer(
          loadConfig(workerConfigSpec, {
            ...workerFlags,
            routers: router.address,
            trackerAddress: tracker.address,
          }),
          deps('worker'),
        );
        print(worker);
        process.stdout.write(
          `dsat is up (data in ${statusConfig.dataDir}). Press Ctrl-C to stop.\n` +
            `Next, in another terminal:\n` +
            `  npx dsat submit demo '{"text":"hi"}' --follow\n` +
            `  npx dsat tasks\n` +
            `  npx dsat trace TASK_ID\n` +
            `  npx dsat --help\n`,
        );
      } catch (err) {
        await shutdown.run('start-up failed');
        exitWithError(err);
      }
    });
}
