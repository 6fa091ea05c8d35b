import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import type { TaskContext } from '../../../sdk/worker';
import { createWorker, NonRetryableError } from '../../../sdk/worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

describe('a 3-stage pipeline in one process', () => {
  let mesh: RouterMesh;
  afterEach(async () => mesh?.stop());

  it('runs every task through the three stages once', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('p3', ['s1', 's2', 's3']));
    const worker = createWorker({
      routers: [mesh.router.address],
      concurrency: 16,
      logger: silent,
      handlers: {
        s1: (x) => ({ ...(x as object), s1: true }),
        s2: (x) => ({ ...(x as object), s2: true }),
        s3: (x) => ({ ...(x as object), s3: true }),
      },
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    try {
      await worker.connected();
      const ids = await Promise.all(
        Array.from({ length: 50 }, (_, i) => client.submit('p3', { i }).then((r) => r.taskId)),
      );
      const outputs = await Promise.all(ids.map((id) => client.result(id, { timeoutMs: 20_000 })));
      outputs.forEach((o, i) => expect(o).toEqual({ i, s1: true, s2: true, s3: true }));
      for (const id of ids)
        expect((await mesh.task(id)).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
      await eventually(() => worker.info().completed === 150, 5_000, 'acks');
    } finally {
      client.close();
      await worker.stop();
    }
  });

  it("takes a synchronous handler's value at once, its throw as the attempt's failure, and an async handler's promise", async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('mixed', ['s1', 's2', 's3']));
    const wrapped: string[] = [];
    const worker = createWorker({
      routers: [mesh.router.address],
      concurrency: 16,
      logger: silent,
      // A hook written for promises still works around a synchronous handler.
      hooks: {
        aroundTask: async (ctx, run) => {
          wrapped.push(ctx.taskId);
          return await run();
        },
      },
      handlers: {
        s1: (x, ctx: TaskContext) => {
          const { heartbeat } = ctx;
          heartbeat({ fraction: 0.5 });
          const seen = JSON.parse(JSON.stringify(ctx)) as Record<string, unknown>;
          return {
            ...(x as object),
            token: ctx.asyncToken,
            seenStage: seen.stage,
            seenKeys: Object.keys(seen),
          };
        },
        s2: async (x) => {
          await new Promise((r) => setTimeout(r, 1));
          return { ...(x as object), s2: true };
        },
        s3: (x) => {
          if ((x as { i: number }).i === 0)
            throw new NonRetryableError('no zero', { code: 'ZERO' });
          return { ...(x as object), s3: true };
        },
      },
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    try {
      await worker.connected();
      const ids = await Promise.all(
        Array.from({ length: 20 }, (_, i) => client.submit('mixed', { i }).then((r) => r.taskId)),
      );
      await eventually(
        async () => {
          const tasks = await Promise.all(ids.map((id) => mesh.task(id)));
          return tasks.every((t) => t.state >= TaskState.TASK_STATE_SUCCEEDED);
        },
        20_000,
        'every task ended',
      );
      const failed = await mesh.task(ids[0]!);
      expect(failed.state).toBe(TaskState.TASK_STATE_FAILED);
      expect(failed.lastError).toMatchObject({ code: 'ZERO', message: 'no zero' });
      for (const [i, id] of ids.entries()) {
        if (i === 0) continue;
        expect(await client.result(id, { timeoutMs: 5_000 })).toEqual({
          i,
          token: `${id}:s1:1`,
          seenStage: 's1',
          // What a handler that logs its context shows: the attempt's facts, not the worker's.
          seenKeys: expect.not.arrayContaining(['r', 'conn', 'a']),
          s2: true,
          s3: true,
        });
      }
      expect(new Set(wrapped)).toEqual(new Set(ids));
    } finally {
      client.close();
      await worker.stop();
    }
  });
});
