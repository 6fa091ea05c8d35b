import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import type { Worker } from '../../../sdk/worker';
import { createWorker } from '../../../sdk/worker';
import { submitMany } from '../../helpers/process-mesh';
import { RawWorker } from '../../helpers/raw-worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';

jest.setTimeout(60_000);

describe('dispatch', () => {
  let mesh: RouterMesh;
  const workers: Worker[] = [];
  const raws: RawWorker[] = [];
  afterEach(async () => {
    for (const r of raws.splice(0)) r.close();
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await mesh?.stop();
  });

  it('spreads 1,000 tasks round robin within ±1 over 4 idle workers; a draining or disconnected worker gets none', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('rr', ['work']));
    const counts = new Map<string, number>();
    const make = (id: string) => {
      const w = createWorker({
        routers: [mesh.router.address],
        workerId: id,
        concurrency: 400,
        logger: silent,
        handlers: {
          work: () => {
            counts.set(id, (counts.get(id) ?? 0) + 1);
            return { by: id };
          },
        },
      });
      workers.push(w);
      return w;
    };
    const idle = ['w1', 'w2', 'w3', 'w4'].map(make);
    await Promise.all(idle.map((w) => w.connected()));
    // One that connects and leaves, and one that says Drain but keeps its stream open.
    const gone = make('gone');
    await gone.connected();
    await gone.stop();
    const draining = new RawWorker(mesh.router.address);
    raws.push(draining);
    draining.hello('draining', ['work'], 400);
    draining.credit(400);
    draining.send({ kind: { $case: 'drain', value: {} } });
    await eventually(() => mesh.router.dispatcher.counts().links === 5, 5_000, '5 streams');
    const router = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(mesh.router.address),
    );
    const ids = await submitMany(
      router,
      Array.from({ length: 1000 }, (_, i) => ({
        clientRef: String(i),
        task: {
          pipeline: 'rr',
          payload: Buffer.from(JSON.stringify({ i })),
          contentType: 'application/json',
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      })),
      100,
    );
    expect(ids.size).toBe(1000);
    await eventually(
      () => [...counts.values()].reduce((a, b) => a + b, 0) === 1000,
      20_000,
      'all tasks',
    );
    const per = ['w1', 'w2', 'w3', 'w4'].map((id) => counts.get(id) ?? 0);
    expect(Math.max(...per) - Math.min(...per)).toBeLessThanOrEqual(1);
    expect(counts.get('gone') ?? 0).toBe(0);
    expect(draining.assigned).toHaveLength(0);
  });

  it('least-in-flight sends to the worker with the fewest tasks', async () => {
    mesh = await startRouterMesh({ router: { dispatch: 'least-in-flight' } });
    await mesh.savePipeline(linear('lif', ['work']));
    const busy = new RawWorker(mesh.router.address);
    const free = new RawWorker(mesh.router.address);
    raws.push(busy, free);
    busy.hello('busy', ['work'], 10);
    free.hello('free', ['work'], 10);
    await eventually(() => mesh.router.dispatcher.counts().links === 2, 5_000, 'streams');
    busy.credit(10);
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    for (let i = 0; i < 3; i++) await client.submit('lif', { i });
    await busy.until(() => busy.assigned.length === 3, 5_000, 'busy gets 3');
    free.credit(10);
    await eventually(() => mesh.router.dispatcher.counts().links === 2);
    for (let i = 0; i < 3; i++) await client.submit('lif', { i });
    // busy holds 3, free holds 0: the next three all go to free (3 vs 3 then ties alternate).
    await free.until(() => free.assigned.length === 3, 5_000, 'free gets 3');
    expect(busy.assigned).toHaveLength(3);
    client.close();
  });

  it("holds a stage to its pipeline's concurrency across workers, and runs every task", async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('limited', ['call'], { concurrency: 2 }));
    let running = 0;
    let most = 0;
    const handler = async () => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 30));
      running--;
      return { ok: true };
    };
    for (let i = 0; i < 3; i++) {
      const w = createWorker({
        routers: [mesh.router.address],
        logger: silent,
        concurrency: 4,
        handlers: { call: handler },
      });
      workers.push(w);
      await w.connected();
    }
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const ids = await Promise.all(
      Array.from({ length: 24 }, async (_, i) => (await client.submit('limited', { i })).taskId),
    );
    for (const id of ids) await client.result(id, { timeoutMs: 20_000 });
    expect(most).toBe(2);
    client.close();
  });

  it('cancel reaches a running handler through its signal and the task ends CANCELLED', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('slow', ['work']));
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let aborted: unknown;
    const w = createWorker({
      routers: [mesh.router.address],
      logger: silent,
      handlers: {
        work: (_x, ctx) =>
          new Promise((_, reject) => {
            started();
            ctx.signal.addEventListener('abort', () => {
              aborted = ctx.signal.reason;
              reject(new Error('aborted'));
            });
          }),
      },
    });
    workers.push(w);
    await w.connected();
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('slow', { x: 1 });
    await running;
    const task = await client.cancel(taskId, 'no longer needed');
    expect(task.state).toBe(TaskState.TASK_STATE_CANCELLED);
    await eventually(() => aborted !== undefined, 5_000, 'handler abort');
    expect(String((aborted as Error).message)).toContain('CANCEL_REQUESTED');
    await expect(client.result(taskId)).rejects.toMatchObject({
      state: TaskState.TASK_STATE_CANCELLED,
    });
    // The aborted attempt reports nothing and its slot is freed.
    await eventually(() => w.info().inFlight === 0, 5_000, 'slot freed');
    expect(w.info()).toMatchObject({ completed: 0, failed: 0 });
    client.close();
  });
});
