import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type { SubmitTasksEntry, SubmitTasksRequest } from '../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import { StatusServiceDefinition, type WatchEventsResponse } from '../../gen/dsat/status/v1/status';
import type { Transition } from '../../gen/dsat/task/v1/task';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { WorkerServiceDefinition } from '../../gen/dsat/worker/v1/worker';
import { AsyncQueue } from '../../services/shared/async-queue';
import type { DsatClient } from '../../services/shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import type { RunningProcess } from './processes';
import { DSAT_BIN, spawnDsat, spawnProcess } from './processes';
import { tempDir } from './temp-dir';
import { TERMINAL_STATES } from '../../services/status/task-state-machine';

/** A mesh of real processes: each service, and each worker, its own `dsat` process. */
export class ProcessMesh {
  readonly procs: RunningProcess[] = [];
  private readonly dirs: { cleanup(): void }[] = [];
  private readonly channels: { close(): void }[] = [];
  statusAddress = '';
  /** Nothing listens here until startTracker(): routers and workers then run without one. */
  trackerAddress = '127.0.0.1:1';
  routers: string[] = [];
  /** Environment of every process this mesh starts (e.g. the OTEL_* variables). */
  env: NodeJS.ProcessEnv = {};
  status!: DsatClient<typeof StatusServiceDefinition>;

  private statusDir = '';

  async startStatus(extra: string[] = []): Promise<string> {
    const dir = tempDir('dsat-e2e-');
    this.dirs.push(dir);
    this.statusDir = dir.path;
    const p = this.spawn(['status', '--port', '0', '--data-dir', dir.path, ...extra]);
    const m = await p.waitForLine(/^status listening on (\S+)$/);
    this.statusAddress = m[1]!;
    const channel = createDsatChannel(this.statusAddress);
    this.channels.push(channel);
    this.status = createDsatClient(StatusServiceDefinition, channel);
    return this.statusAddress;
  }

  /** The status service again, on the same port and store (after the test stopped it). */
  async restartStatus(extra: string[] = []): Promise<RunningProcess> {
    const port = this.statusAddress.slice(this.statusAddress.lastIndexOf(':') + 1);
    const p = this.spawn(['status', '--port', port, '--data-dir', this.statusDir, ...extra]);
    await p.waitForLine(/^status listening on (\S+)$/);
    return p;
  }

  /** A tracker; routers and workers started after it join it. */
  async startTracker(
    extra: string[] = [],
    env: NodeJS.ProcessEnv = {},
  ): Promise<{ p: RunningProcess; address: string }> {
    const p = this.spawn(
      ['tracker', '--port', '0', '--status-address', this.statusAddress, ...extra],
      env,
    );
    const m = await p.waitForLine(/^tracker listening on (\S+)$/);
    this.trackerAddress = m[1]!;
    return { p, address: m[1]! };
  }

  async startRouter(
    extra: string[] = [],
    env: NodeJS.ProcessEnv = {},
  ): Promise<{ p: RunningProcess; address: string }> {
    const p = this.spawn(
      [
        'router',
        '--port',
        '0',
        '--status-address',
        this.statusAddress,
        '--tracker-address',
        this.trackerAddress,
        ...extra,
      ],
      env,
    );
    const m = await p.waitForLine(/^router listening on (\S+)$/);
    // A router on every interface (--host 0.0.0.0) is reached from here through loopback.
    const address = m[1]!.replace(/^0\.0\.0\.0:/, '127.0.0.1:');
    this.routers.push(address);
    return { p, address };
  }

  async startWorker(
    handler: string,
    stages: string[],
    extra: string[] = [],
    routers = this.routers,
    env: NodeJS.ProcessEnv = {},
    netns?: string,
  ): Promise<{ p: RunningProcess; address: string }> {
    const p = this.spawn(
      [
        'worker',
        '--port',
        '0',
        '--routers',
        routers.join(','),
        '--tracker-address',
        this.trackerAddress,
        '--handler',
        handler,
        '--stages',
        stages.join(','),
        ...extra,
      ],
      env,
      netns,
    );
    const m = await p.waitForLine(/^worker listening on (\S+)$/);
    return { p, address: m[1]! };
  }

  /**
   * Spawns `dsat ARGS...`; inside network namespace `netns` when given (through `ip netns exec`,
   * which execs node in place, so the child's pid is node's and signals reach it).
   */
  spawn(args: string[], env: NodeJS.ProcessEnv = {}, netns?: string): RunningProcess {
    const prof = process.env.DSAT_PROFILE_DIR;
    const fullEnv = {
      DSAT_LOG_LEVEL: process.env.DSAT_TEST_LOG_LEVEL ?? 'warn',
      ...this.env,
      ...env,
    };
    const nodeArgs = prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}/${args[0]}`] : [];
    const p =
      netns === undefined
        ? spawnDsat(args, fullEnv, nodeArgs)
        : spawnProcess(
            'ip',
            ['netns', 'exec', netns, process.execPath, ...nodeArgs, DSAT_BIN, ...args],
            fullEnv,
          );
    this.procs.push(p);
    return p;
  }

  router(address = this.routers[0]!): DsatClient<typeof RouterServiceDefinition> {
    const channel = createDsatChannel(address);
    this.channels.push(channel);
    return createDsatClient(RouterServiceDefinition, channel);
  }

  tracker(address = this.trackerAddress): DsatClient<typeof TrackerServiceDefinition> {
    const channel = createDsatChannel(address);
    this.channels.push(channel);
    return createDsatClient(TrackerServiceDefinition, channel);
  }

  worker(address: string): DsatClient<typeof WorkerServiceDefinition> {
    const channel = createDsatChannel(address);
    this.channels.push(channel);
    return createDsatClient(WorkerServiceDefinition, channel);
  }

  async savePipeline(p: Pipeline): Promise<Pipeline> {
    return (await this.status.savePipeline({ pipeline: p })).pipeline!;
  }

  /** Waits until every stage has a connected worker on the router. */
  async waitForWorkers(stages: string[], router = this.routers[0]!, count = 1): Promise<void> {
    const client = this.router(router);
    const end = Date.now() + 30_000;
    for (;;) {
      const load = await client.getRouterLoad({}).catch(() => undefined);
      if (
        load &&
        stages.every((s) => (load.stages.find((l) => l.stage === s)?.workers ?? 0) >= count)
      ) {
        return;
      }
      if (Date.now() > end) throw new Error(`workers for ${stages.join(',')} never connected`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    for (const p of this.procs) p.kill('SIGKILL');
    await Promise.all(this.procs.map((p) => p.exited));
    for (const c of this.channels) c.close();
    for (const d of this.dirs) d.cleanup();
  }
}

/** Final transitions of a pipeline's tasks, from the feed, as they are committed. */
export class ResultFeed {
  readonly finals = new Map<string, Transition[]>();
  private readonly abort = new AbortController();
  private waiters: { n: number; resolve: () => void }[] = [];
  private done: Promise<void> | undefined;

  /** `onFinal` sees each final transition as it arrives (e.g. to write it to a history log). */
  constructor(private readonly onFinal?: (t: Transition) => void) {}

  async start(status: DsatClient<typeof StatusServiceDefinition>, pipeline: string): Promise<void> {
    const { revision } = await status.getStoreStats({});
    const stream: AsyncIterable<WatchEventsResponse> = status.watchEvents(
      {
        filter: {
          pipeline,
          states: [...TERMINAL_STATES],
          stage: '',
          actionKey: '',
        },
        fromRevision: revision,
      },
      { signal: this.abort.signal },
    );
    this.done = (async () => {
      for await (const res of stream) {
        for (const t of res.transitions) {
          this.onFinal?.(t);
          const list = this.finals.get(t.taskId) ?? [];
          list.push(t);
          this.finals.set(t.taskId, list);
        }
        this.waiters = this.waiters.filter((w) => {
          if (this.finals.size < w.n) return true;
          w.resolve();
          return false;
        });
      }
    })().catch(() => undefined);
  }

  /** Resolves once `n` distinct tasks have ended, or rejects after `ms`. */
  waitFor(n: number, ms: number): Promise<void> {
    if (this.finals.size >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${this.finals.size} of ${n} tasks ended within ${ms} ms`)),
        ms,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}

/**
 * Submits tasks through one SubmitTasks stream, in batches of what is ready, and resolves with
 * client_ref → task_id once every entry is acknowledged. Refused entries reject.
 */
export async function submitMany(
  router: DsatClient<typeof RouterServiceDefinition>,
  entries: SubmitTasksEntry[],
  batch = 500,
): Promise<Map<string, string>> {
  const queue = new AsyncQueue<SubmitTasksRequest>();
  for (let i = 0; i < entries.length; i += batch)
    queue.push({ entries: entries.slice(i, i + batch) });
  const ids = new Map<string, string>();
  for await (const res of router.submitTasks(queue)) {
    for (const a of res.acks) {
      if (a.code !== 0) throw new Error(`entry ${a.clientRef} refused: ${a.code} ${a.message}`);
      ids.set(a.clientRef, a.taskId);
    }
    if (ids.size === entries.length) queue.end();
  }
  return ids;
}

/** A SubmitTasks entry carrying `input` as JSON. */
export function jsonEntry(pipeline: string, clientRef: string, input: object): SubmitTasksEntry {
  return {
    clientRef,
    task: {
      pipeline,
      payload: Buffer.from(JSON.stringify(input)),
      contentType: 'application/json',
      idempotencyKey: '',
      priority: 0,
      traceparent: '',
    },
  };
}
