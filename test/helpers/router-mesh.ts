import type { Pipeline, Stage } from '../../gen/dsat/pipeline/v1/pipeline';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import type { Task } from '../../gen/dsat/task/v1/task';
import { startStatusServer } from '../../services/status/server';
import type { DsatClient } from '../../services/shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import { Decorator } from '../../gen/dsat/pipeline/v1/pipeline';
import type { RouterHandle } from '../../services/router/server';
import { startRouterServer } from '../../services/router/server';
import type { FlagValues } from '../../services/shared/config';
import { loadConfig, routerConfigSpec, statusConfigSpec } from '../../services/shared/config';
import { createLogger } from '../../services/shared/logger';
import { tempDir } from './temp-dir';

export const silent = createLogger(
  'test',
  (process.env.DSAT_TEST_LOG_LEVEL as 'debug') ?? 'silent',
);

export interface StageSpec {
  readonly name: string;
  readonly next?: string[];
  readonly maxAttempts?: number;
  readonly heartbeatTimeoutMs?: number;
  readonly runTimeoutMs?: number;
  readonly publish?: boolean;
  readonly async?: boolean;
  readonly nonRetryable?: string[];
  readonly concurrency?: number;
}

const dur = (ms: number | undefined) =>
  ms === undefined ? undefined : { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };

export function stage(s: StageSpec): Stage {
  return {
    name: s.name,
    next: s.next ?? [],
    queueTimeout: undefined,
    runTimeout: dur(s.runTimeoutMs),
    heartbeatTimeout: dur(s.heartbeatTimeoutMs),
    asyncTimeout: undefined,
    maxAttempts: s.maxAttempts ?? 3,
    backoff: undefined,
    nonRetryableErrors: s.nonRetryable ?? [],
    concurrency: s.concurrency ?? 0,
    decorators: [
      ...(s.publish ? [Decorator.DECORATOR_PUBLISH] : []),
      ...(s.async ? [Decorator.DECORATOR_ASYNC] : []),
    ],
  };
}

export function pipeline(name: string, stages: StageSpec[], maxHops = 0): Pipeline {
  return {
    name,
    version: 0,
    description: '',
    stages: stages.map(stage),
    entryStage: '',
    maxHops,
    createdAt: undefined,
  };
}

/** A linear pipeline a → b → c ... */
export function linear(name: string, names: string[], extra: Partial<StageSpec> = {}): Pipeline {
  return pipeline(
    name,
    names.map((n, i) => ({ ...extra, name: n, next: i + 1 < names.length ? [names[i + 1]!] : [] })),
  );
}

export interface RouterMesh {
  readonly statusAddress: string;
  readonly status: DsatClient<typeof StatusServiceDefinition>;
  readonly router: RouterHandle;
  savePipeline(p: Pipeline): Promise<Pipeline>;
  task(taskId: string): Promise<Task>;
  startRouter(flags?: FlagValues): Promise<RouterHandle>;
  stop(): Promise<void>;
}

export interface MeshOptions {
  readonly router?: FlagValues;
}

/** A status service and one router (more with startRouter), all in this process. */
export async function startRouterMesh(options: MeshOptions = {}): Promise<RouterMesh> {
  const flags = options.router ?? {};
  const dir = tempDir('dsat-router-test-');
  const handle = await startStatusServer(
    loadConfig(
      statusConfigSpec,
      { port: '0', dataDir: dir.path, shutdownGrace: '1000', sync: false },
      {},
    ),
    { logger: silent },
  );
  const server = {
    address: handle.address,
    async stop() {
      await handle.shutdown();
      dir.cleanup();
    },
  };
  const channel = createDsatChannel(server.address);
  const status = createDsatClient(StatusServiceDefinition, channel);
  const routers: RouterHandle[] = [];
  const startRouter = async (more: FlagValues = {}) => {
    const r = await startRouterServer(
      loadConfig(
        routerConfigSpec,
        {
          port: '0',
          statusAddress: server.address,
          trackerAddress: '127.0.0.1:1',
          shutdownGrace: '1000',
          ...flags,
          ...more,
        },
        {},
      ),
      { logger: silent },
    );
    routers.push(r);
    await r.ready;
    return r;
  };
  const router = await startRouter();
  return {
    statusAddress: server.address,
    status,
    router,
    async savePipeline(p) {
      const res = await status.savePipeline({ pipeline: p });
      return res.pipeline!;
    },
    async task(taskId) {
      return (await status.getTask({ taskId })).task!;
    },
    startRouter,
    async stop() {
      await Promise.all(routers.map((r) => r.shutdown()));
      channel.close();
      await server.stop();
    },
  };
}

/** Polls `check` until it returns a value other than undefined/false, or throws after `ms`. */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 10_000,
  what = 'condition',
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
