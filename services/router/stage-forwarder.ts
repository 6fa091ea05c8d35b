import type { Assignment, ForwardTasksRequest } from '../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import type { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { AsyncQueue } from '../shared/async-queue';
import type { ChannelSettings, DsatClient } from '../shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../shared/grpc-client';
import type { Logger } from '../shared/logger';
import type { HeldTaskInit } from './held-task';
import { HeldTask } from './held-task';

export interface StageForwarderOptions {
  readonly tracker: DsatClient<typeof TrackerServiceDefinition> | undefined;
  /** This router's own address, never a forwarding target. */
  readonly selfAddress: () => string;
  readonly logger: Logger;
  /** How long a stage's routers are remembered. */
  readonly resolveTtlMs?: number;
  /** Settings (TLS among them) of the channels to other routers. */
  readonly channel?: ChannelSettings;
}

export interface StageForwarder {
  forward(tasks: readonly HeldTaskInit[]): void;
  close(): void;
}

interface Target {
  readonly queue: AsyncQueue<ForwardTasksRequest>;
  pending: Assignment[];
}

/**
 * Hands tasks queued at a stage this router does not serve to a router that does (found with the
 * tracker's ResolveStage), over one long-lived ForwardTasks stream per router, batched per tick.
 * Forwarding only saves time: a task that cannot be forwarded is still QUEUED in the store, and
 * the router of its stage picks it up from its feed.
 */
export function createStageForwarder(options: StageForwarderOptions): StageForwarder {
  const ttl = options.resolveTtlMs ?? 5_000;
  const resolved = new Map<string, { at: number; routers: string[]; rr: number }>();
  const targets = new Map<string, Target>();
  let flushScheduled = false;
  let closed = false;

  function target(address: string): Target {
    let t = targets.get(address);
    if (t) return t;
    const queue = new AsyncQueue<ForwardTasksRequest>();
    t = { queue, pending: [] };
    targets.set(address, t);
    const client = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(address, options.channel),
    );
    void (async () => {
      try {
        for await (const _ of client.forwardTasks(queue)) void _;
      } catch (err) {
        options.logger.debug({ err: (err as Error).message, address }, 'forward stream ended');
      } finally {
        if (targets.get(address)?.queue === queue) targets.delete(address);
      }
    })();
    return t;
  }

  function flush() {
    flushScheduled = false;
    for (const t of targets.values()) {
      if (t.pending.length === 0) continue;
      t.queue.push({ tasks: t.pending });
      t.pending = [];
    }
  }

  async function routersOf(stage: string): Promise<string[]> {
    const hit = resolved.get(stage);
    if (hit && performance.now() - hit.at < ttl) return hit.routers;
    if (!options.tracker) return [];
    const res = await options.tracker.resolveStage(
      { stage },
      { deadline: new Date(Date.now() + 2_000) },
    );
    const self = options.selfAddress();
    const routers = res.routers.map((m) => m.address).filter((a) => a !== '' && a !== self);
    resolved.set(stage, { at: performance.now(), routers, rr: 0 });
    return routers;
  }

  return {
    forward(tasks) {
      if (closed) return;
      const byStage = new Map<string, HeldTaskInit[]>();
      for (const t of tasks) {
        const list = byStage.get(t.stage.name) ?? [];
        list.push(t);
        byStage.set(t.stage.name, list);
      }
      for (const [stage, list] of byStage) {
        routersOf(stage).then(
          (routers) => {
            if (routers.length === 0 || closed) return;
            const r = resolved.get(stage)!;
            for (const init of list) {
              const address = routers[r.rr++ % routers.length]!;
              target(address).pending.push(new HeldTask(init).toAssignment());
            }
            if (!flushScheduled) {
              flushScheduled = true;
              setImmediate(flush);
            }
          },
          (err: unknown) =>
            options.logger.debug({ err: (err as Error).message, stage }, 'cannot resolve a stage'),
        );
      }
    },
    close() {
      closed = true;
      for (const t of targets.values()) t.queue.end();
      targets.clear();
    },
  };
}
