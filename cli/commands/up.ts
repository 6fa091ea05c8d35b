import path from 'node:path';
import { Command, Option } from 'commander';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { flagArgs } from '../../services/shared/cli-options';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import { tlsSettings } from '../../services/shared/transport-security';
import { startOtlpReceiver } from '../../services/shared/otlp-receiver';
import { SpanStore } from '../../services/shared/span-store';
import { otlpMetricsTarget, startMetrics } from '../../services/shared/metrics';
import { startTelemetry } from '../../services/shared/telemetry';
import { readPipelineFile } from '../../services/tracker/pipeline-file';
import type { ConfigProblem, ConfigSpec, FlagValues } from '../../services/shared/config';
import {
  cliConfigSpec,
  ConfigError,
  DEFAULT_PORTS,
  loadConfig,
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
  workerConfigSpec,
} from '../../services/shared/config';
import type { Logger, LogLevel } from '../../services/shared/logger';
import { createLogger } from '../../services/shared/logger';
import { exitWithError } from '../../services/shared/run-service';
import type { ServiceDeps, ServiceHandle } from '../../services/shared/service-host';
import type { Shutdown } from '../../services/shared/shutdown';
import { createShutdown, exitOnSignals } from '../../services/shared/shutdown';
import { startRouterServer } from '../../services/router/server';
import { startStatusServer } from '../../services/status/server';
import { startTrackerServer } from '../../services/tracker/server';
import { startWorkerServer } from '../../services/worker/server';
import { wholeNumberOption } from '../number-options';
import { stageGraph } from '../output';
import { ProcessSupervisor, STOP_GRACE_MS } from '../process-supervisor';

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
  traceReceiverPort?: number;
  metricsPort?: number;
  reflection?: boolean;
  processes?: boolean;
}

const DEMO_PIPELINE = path.join(__dirname, '../../deploy/k8s/pipelines/demo.yaml');
const DEMO_HANDLERS = path.join(__dirname, '../../deploy/demo-handlers.js');

type ServiceName = 'status' | 'tracker' | 'router' | 'worker';

/** Starts one service from its flags; `pid` (and `metricsUrl`) are set for a child process. */
type StartService = (
  name: ServiceName,
  flags: FlagValues,
) => Promise<{ address: string; pid?: number; metricsUrl?: string }>;

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

/**
 * Each service's flags, checked together (exit 2 naming every bad value), and the port each will
 * listen on. Both modes start the services from these same flags.
 */
function loadServices(opts: UpOptions) {
  const common = {
    host: opts.host,
    logLevel: opts.logLevel ?? process.env.DSAT_LOG_LEVEL ?? 'warn',
    // A development mesh: grpcurl may list and describe its services.
    reflection: opts.reflection !== false,
  };
  const flags = {
    status: defined({ ...common, port: opts.statusPort, dataDir: opts.dataDir, sync: opts.sync }),
    tracker: defined({ ...common, port: opts.trackerPort }),
    router: defined({ ...common, port: opts.routerPort }),
    worker: defined({
      ...common,
      port: opts.workerPort ?? process.env.DSAT_WORKER_PORT ?? String(DEFAULT_PORTS.worker),
      ...(opts.demo === false ? {} : { handler: DEMO_HANDLERS, stages: 'parse,hash,upper' }),
    }),
  };
  const problems: ConfigProblem[] = [];
  const status = loadAll('status', statusConfigSpec, flags.status, problems);
  const tracker = loadAll('tracker', trackerConfigSpec, flags.tracker, problems);
  const router = loadAll('router', routerConfigSpec, flags.router, problems);
  const worker = loadAll('worker', workerConfigSpec, flags.worker, problems);
  if (problems.length > 0 || !status || !tracker || !router || !worker) {
    exitWithError(new ConfigError(problems));
  }
  const ports = {
    status: status.port,
    tracker: tracker.port,
    router: router.port,
    worker: worker.port,
  };
  return { flags, ports, status, workerDrainMs: worker.drainTimeout };
}

/** The four servers in this process, sharing one logger and one shutdown. */
function embedded(logger: Logger, shutdown: Shutdown): StartService {
  const deps = (name: string): ServiceDeps => ({
    logger: logger.child({ service: name }),
    shutdown,
    onFatal: (err) =>
      void shutdown.run(`${name} cannot go on`, { urgent: true }).finally(() => exitWithError(err)),
  });
  const servers: Record<ServiceName, (flags: FlagValues) => Promise<ServiceHandle>> = {
    status: (f) => startStatusServer(loadConfig(statusConfigSpec, f), deps('status')),
    tracker: (f) => startTrackerServer(loadConfig(trackerConfigSpec, f), deps('tracker')),
    router: (f) => startRouterServer(loadConfig(routerConfigSpec, f), deps('router')),
    worker: (f) => startWorkerServer(loadConfig(workerConfigSpec, f), deps('worker')),
  };
  return (name, flags) => servers[name](flags);
}

/**
 * Where the children's metrics go over OTLP: the endpoint the shell names, never the span receiver
 * that OTEL_EXPORTER_OTLP_ENDPOINT points them at (it takes no metrics); none without one.
 */
function metricsExportFromShell(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { protocol, url } = otlpMetricsTarget(env);
  return {
    OTEL_METRICS_EXPORTER: env.OTEL_METRICS_EXPORTER ?? (url === undefined ? 'none' : 'otlp'),
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: url,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: protocol,
  };
}

/** Children export their spans to the receiver of this process, whatever OTEL_* the shell has. */
function exportTo(url: string, service: string): NodeJS.ProcessEnv {
  return {
    ...metricsExportFromShell(process.env),
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: url,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: undefined,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: undefined,
    OTEL_SERVICE_NAME: `dsat-${service}`,
    // Soon enough for `dsat trace` right after a task ends (the SDK's default is 5 s).
    OTEL_BSP_SCHEDULE_DELAY: process.env.OTEL_BSP_SCHEDULE_DELAY ?? '1000',
    // A child orphaned by a kill -9 of this process retries its last export to nobody until
    // this timeout (10 s by default) before it exits.
    OTEL_EXPORTER_OTLP_TIMEOUT: process.env.OTEL_EXPORTER_OTLP_TIMEOUT ?? '3000',
  };
}

/** With --processes, each service serves its metrics on the next port up from --metrics-port. */
const METRICS_PORT_OFFSET: Record<ServiceName, number> = {
  status: 0,
  tracker: 1,
  router: 2,
  worker: 3,
};

/** Each service its own `dsat <service>` child process, supervised. */
function processes(
  ports: Record<ServiceName, number>,
  traces: string | undefined,
  shutdown: Shutdown,
  workerDrainMs: number,
  metricsPort: number | undefined,
): StartService {
  const supervisor = new ProcessSupervisor({
    notice: (line) => process.stderr.write(`dsat: ${line}\n`),
    giveUp: (err) => void shutdown.run('a service keeps crashing').then(() => exitWithError(err)),
  });
  // Before the span receiver closes ('server'), so the children's last spans reach it.
  shutdown.on('stop-work', 'child processes', () => supervisor.stop());
  return (name, flags) =>
    supervisor.start({
      name,
      // The supervisor passes --port: the one asked for, then the one first bound.
      args: [name, ...flagArgs({ ...flags, port: undefined })],
      port: ports[name],
      ...(metricsPort === undefined
        ? {}
        : { metricsPort: metricsPort === 0 ? 0 : metricsPort + METRICS_PORT_OFFSET[name] }),
      env: traces === undefined ? {} : exportTo(traces, name),
      // A stopping worker first lets its running tasks finish, for up to its drain timeout.
      ...(name === 'worker' ? { stopGraceMs: workerDrainMs + STOP_GRACE_MS } : {}),
    });
}

export function upCommand(): Command {
  return new Command('up')
    .description(
      'Run the mesh: status, router, tracker and worker servers in this process (or, with --processes, each in its own child process), with the LevelDB store in ./.dsat.',
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
    .option(
      '--no-reflection',
      'Do not serve gRPC reflection (on here, off for a service run alone)',
    )
    .addOption(
      wholeNumberOption(
        '--trace-receiver-port <port>',
        'Port of the OTLP/HTTP span receiver [default 7418]',
        undefined,
        0,
        65535,
      ),
    )
    .addOption(
      wholeNumberOption(
        '--metrics-port <port>',
        'Serve Prometheus metrics at http://HOST:PORT/metrics; with --processes each service serves its own, on the next port up (0 picks free ones) [env DSAT_METRICS_PORT]',
        undefined,
        0,
        65535,
      ),
    )
    .option(
      '--processes',
      'Run each service as its own child process (`dsat status`, …), restarted on the same port if it dies, all stopped on Ctrl-C; their logs go to stderr, each line prefixed with [service]',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  $ dsat up\n  $ dsat up --data-dir /tmp/dsat --router-port 0\n  $ dsat up --processes        # four child processes; the pid of each is printed\n  $ DSAT_LOG_LEVEL=debug dsat up',
    )
    .action(async (opts: UpOptions) => {
      const { flags, ports, status: statusConfig, workerDrainMs } = loadServices(opts);
      const logger = createLogger('dsat', statusConfig.logLevel as LogLevel);
      const shutdown = createShutdown(logger);
      exitOnSignals(shutdown, logger, {
        stopping: () =>
          process.stdout.write(
            'dsat is stopping: running tasks finish, then the store closes (Ctrl-C again stops at once)\n',
          ),
        stopped: () =>
          process.stdout.write(`dsat stopped; the data stays in ${statusConfig.dataDir}\n`),
      });
      const metricsPort = opts.metricsPort ?? statusConfig.metricsPort;
      const print = (name: string, address: string, pid?: number, metricsUrl?: string) =>
        process.stdout.write(
          `  ${name.padEnd(8)} ${address}${pid === undefined ? '' : `  (pid ${pid})`}${
            metricsUrl === undefined ? '' : `  metrics ${metricsUrl}`
          }\n`,
        );
      try {
        process.stdout.write('dsat is starting:\n');
        let traces: string | undefined;
        if (opts.traceReceiver !== false) {
          const spans = new SpanStore();
          const receiver = await startOtlpReceiver(spans, {
            host: statusConfig.host,
            port: opts.traceReceiverPort ?? 7418,
            logger,
          });
          shutdown.on('server', 'span receiver', () => receiver.close());
          if (!opts.processes) {
            const telemetry = startTelemetry({
              serviceName: 'dsat',
              spanProcessors: [spans.processor()],
            });
            shutdown.on('flush-telemetry', 'telemetry', () => telemetry.shutdown());
          }
          traces = receiver.url;
          print('traces', traces);
        }
        if (!opts.processes) {
          // Before the services start: each makes its instruments as it starts.
          const metrics = await startMetrics({
            serviceName: 'dsat',
            prometheusPort: metricsPort,
            prometheusHost: statusConfig.host,
          });
          shutdown.on('flush-telemetry', 'metrics', () => metrics.shutdown());
          if (metrics.prometheusUrl) print('metrics', metrics.prometheusUrl);
        }
        const start = opts.processes
          ? processes(ports, traces, shutdown, workerDrainMs, metricsPort)
          : embedded(logger, shutdown);
        const started = async (name: ServiceName, f: FlagValues) => {
          const s = await start(name, f);
          print(name, s.address, s.pid, s.metricsUrl);
          return s.address;
        };

        const statusAddress = await started('status', flags.status);
        const trackerAddress = await started('tracker', { ...flags.tracker, statusAddress });
        const router = await started('router', { ...flags.router, statusAddress, trackerAddress });
        if (opts.demo !== false) {
          const channel = createDsatChannel(trackerAddress, tlsSettings(statusConfig));
          const { pipeline: demo } = await createDsatClient(TrackerServiceDefinition, channel)
            .applyPipeline({ pipeline: readPipelineFile(DEMO_PIPELINE) })
            .finally(() => channel.close());
          process.stdout.write(
            `  ${'demo'.padEnd(8)} pipeline ${demo!.name} v${demo!.version}: ${stageGraph(demo!)}\n`,
          );
        }
        await started('worker', { ...flags.worker, routers: router, trackerAddress });
        process.stdout.write(
          `dsat is up (data in ${statusConfig.dataDir}). Press Ctrl-C to stop.\n` +
            `Next, in another terminal:\n` +
            clientEnvHint({ router, status: statusAddress, tracker: trackerAddress, traces }) +
            (opts.demo === false
              ? `  npx dsat pipelines apply my-pipeline.yaml\n` +
                `  npx dsat submit my-pipeline '{"any":"json"}' --follow\n`
              : `  npx dsat submit demo '{"text":"hi"}' --follow\n`) +
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

/**
 * The `export` line a client in another terminal needs when this mesh is not where the CLI looks
 * by default (ports chosen with --*-port), so the hints below it reach this mesh, not another.
 */
export function clientEnvHint(at: {
  router: string;
  status: string;
  tracker: string;
  traces: string | undefined;
}): string {
  const defaults = loadConfig(cliConfigSpec, {}, {});
  const differ = [
    ['DSAT_ROUTER_ADDRESS', at.router, defaults.router],
    ['DSAT_STATUS_ADDRESS', at.status, defaults.status],
    ['DSAT_TRACKER_ADDRESS', at.tracker, defaults.tracker],
    ['DSAT_TRACES_URL', at.traces, defaults.traces],
  ].filter(([, value, fallback]) => value !== undefined && value !== fallback);
  if (differ.length === 0) return '';
  return `  export ${differ.map(([name, value]) => `${name}=${value}`).join(' ')}\n`;
}
