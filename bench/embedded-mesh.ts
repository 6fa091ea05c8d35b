import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pipeline } from '../gen/dsat/pipeline/v1/pipeline';
import {
  cliConfigSpec,
  loadConfig,
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
} from '../services/shared/config';
import type { Logger } from '../services/shared/logger';
import { createShutdown } from '../services/shared/shutdown';
import { startRouterServer } from '../services/router/server';
import { startStatusServer } from '../services/status/server';
import { startTrackerServer } from '../services/tracker/server';
import { loadHandlerModule } from '../services/worker/handler-module';
import type { StageHandler, Worker } from '../sdk/worker';
import { createWorker } from '../sdk/worker';
import type { MeshClients } from '../cli/mesh-clients';
import { meshClients } from '../cli/mesh-clients';

/*
 * `dsat bench --pipeline FILE --embedded`: DSAT's topology test without a mesh to hand. Status
 * (LevelDB in a fresh temporary directory, removed afterwards), tracker and router run in this
 * process on free loopback ports, the file is applied, and one worker per stage serves it: the
 * handlers of `--handler` when given, else synthetic ones that pass the input on after
 * `--stage-ms`.
 */

export interface EmbeddedMeshOptions {
  readonly pipeline: Pipeline;
  /** fsync every commit, as a durable mesh does. */
  readonly sync: boolean;
  /** Attempts each stage's worker runs at once. */
  readonly concurrency: number;
  /** A module exporting a handler per stage; undefined: synthetic handlers. */
  readonly handlerFile: string | undefined;
  /** How long each synthetic attempt takes. */
  readonly stageMs: number;
  readonly logger: Logger;
}

export interface EmbeddedMesh {
  readonly clients: MeshClients;
  /** The applied pipeline's name and version. */
  readonly pipeline: { readonly name: string; readonly version: number };
  readonly dataDir: string;
  stop(): Promise<void>;
}

/** A handler that waits `ms` (cut short when the attempt is taken away) and passes its input on. */
export function syntheticHandler(ms: number): StageHandler {
  return async (input, ctx) => {
    if (ms > 0) await sleep(ms, undefined, { signal: ctx.signal });
    return input;
  };
}

/** Each stage's handler: from the module when one is given (every stage must have one). */
async function stageHandlers(
  stages: readonly string[],
  opts: EmbeddedMeshOptions,
): Promise<Record<string, StageHandler>> {
  if (opts.handlerFile === undefined) {
    const synthetic = syntheticHandler(opts.stageMs);
    return Object.fromEntries(stages.map((s) => [s, synthetic]));
  }
  const handlers = await loadHandlerModule(opts.handlerFile);
  const missing = stages.filter((s) => !handlers[s]);
  if (missing.length > 0) {
    throw new Error(
      `${opts.handlerFile} exports no handler for stage${missing.length === 1 ? '' : 's'} ${missing.join(', ')}`,
    );
  }
  return handlers;
}

export async function startEmbeddedMesh(opts: EmbeddedMeshOptions): Promise<EmbeddedMesh> {
  const stages = opts.pipeline.stages.map((s) => s.name);
  // Before anything starts, so that a handler module without a stage fails fast.
  const handlers = await stageHandlers(stages, opts);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-bench-pipeline-'));
  const shutdown = createShutdown(opts.logger);
  const deps = (service: string) => ({ logger: opts.logger.child({ service }), shutdown });
  // The shell's DSAT_* settings are for the user's own mesh, not this one: env is empty.
  const common = { host: '127.0.0.1', port: '0', shutdownGrace: '2000' };
  const workers: Worker[] = [];
  const stop = async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await shutdown.run('bench done');
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const status = await startStatusServer(
      loadConfig(statusConfigSpec, { ...common, dataDir, sync: opts.sync }, {}),
      deps('status'),
    );
    const tracker = await startTrackerServer(
      loadConfig(trackerConfigSpec, { ...common, statusAddress: status.address }, {}),
      deps('tracker'),
    );
    const router = await startRouterServer(
      loadConfig(
        routerConfigSpec,
        { ...common, statusAddress: status.address, trackerAddress: tracker.address },
        {},
      ),
      deps('router'),
    );
    await router.ready;
    const clients = meshClients(
      loadConfig(
        cliConfigSpec,
        { router: router.address, status: status.address, tracker: tracker.address },
        {},
      ),
    );
    const applied = await clients.tracker.applyPipeline({
      pipeline: opts.pipeline,
      validateOnly: false,
    });
    for (const stage of stages) {
      workers.push(
        createWorker({
          routers: [router.address],
          handlers: { [stage]: handlers[stage]! },
          stages: [stage],
          concurrency: opts.concurrency,
          workerId: `bench-${stage}`,
          logger: opts.logger.child({ service: 'worker', stage }),
          drainTimeoutMs: 2_000,
        }),
      );
    }
    // Tasks sent before a stage's worker is there would count the wait as queue time.
    await Promise.all(workers.map((w) => w.connected(AbortSignal.timeout(10_000))));
    return {
      clients,
      pipeline: { name: applied.pipeline?.name ?? '', version: applied.pipeline?.version ?? 0 },
      dataDir,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
