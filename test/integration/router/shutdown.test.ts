import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Status } from 'nice-grpc-common';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import type { Worker, WorkerLogger } from '../../../sdk/worker';
import { createWorker } from '../../../sdk/worker';
import { loadConfig, routerConfigSpec } from '../../../services/shared/config';
import { serviceEntry, startGrpcServer } from '../../../services/shared/grpc-server';
import { withUnimplemented } from '../../../services/shared/unimplemented';
import { within } from '../../helpers/processes';
import { RawWorker } from '../../helpers/raw-worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(60_000);

/** A health Watch that records each status with the time it arrived. */
function watchHealth(address: string) {
  const def = protoLoader.loadSync(path.join(__dirname, '../../fixtures/grpc/health.proto'), {
    keepCase: true,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: {
      health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client } };
    };
  };
  const client = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  const seen: { status: string; at: number }[] = [];
  const call = (
    client as unknown as { Watch(req: object): grpc.ClientReadableStream<{ status: string }> }
  ).Watch({ service: '' });
  call.on('data', (m) => seen.push({ status: m.status, at: Date.now() }));
  call.on('error', () => undefined);
  return { seen, close: () => client.close() };
}

describe('router shutdown', () => {
  let mesh: RouterMesh | undefined;
  const workers: Worker[] = [];
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await mesh?.stop();
    mesh = undefined;
  });

  it('T23: health says NOT_SERVING first, the worker sees UNAVAILABLE and moves to the other router, and the attempt it ran is finished there', async () => {
    // A grace far longer than the terminator needs: were streams left to forceShutdown, stopping
    // would take the whole grace.
    mesh = await startRouterMesh({ router: { shutdownGrace: '15000' } });
    const r1 = mesh.router;
    const r2 = await mesh.startRouter();
    await mesh.savePipeline(linear('slowish', ['work']));
    const lost: { at: number; code: number }[] = [];
    const logger: WorkerLogger = {
      debug: () => undefined,
      info: () => undefined,
      error: () => undefined,
      warn: (obj: object, msg?: string) => {
        if (msg === 'router stream broke')
          lost.push({ at: Date.now(), code: (obj as { code: number }).code });
      },
      child: () => logger,
    };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let runs = 0;
    const w = createWorker({
      routers: [r1.address, r2.address],
      logger,
      maxReconnectBackoffMs: 500,
      handlers: {
        work: async (x, ctx) => {
          runs++;
          if (runs === 1) {
            // The first attempt is on r1 when it stops; it ends by abort.
            await new Promise((_, reject) =>
              ctx.signal.addEventListener('abort', () => reject(new Error('lost'))),
            );
          }
          await gate;
          return x;
        },
      },
    });
    workers.push(w);
    await w.connected();
    expect(w.info().connectedRouter).toBe(r1.address);
    const client = createClient({ router: r1.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('slowish', { n: 1 });
    await eventually(() => runs === 1, 5_000, 'first attempt running');
    const health = watchHealth(r1.address);
    await eventually(() => health.seen.length > 0, 5_000, 'health watch');
    const started = Date.now();
    await r1.shutdown();
    const took = Date.now() - started;
    expect(took).toBeLessThan(7_500);
    const notServing = health.seen.find((s) => s.status === 'NOT_SERVING');
    expect(notServing).toBeDefined();
    expect(lost.length).toBeGreaterThanOrEqual(1);
    expect([Status.UNAVAILABLE, Status.CANCELLED]).toContain(lost[0]!.code);
    expect(notServing!.at).toBeLessThanOrEqual(lost[0]!.at);
    await eventually(() => w.info().connectedRouter === r2.address, 10_000, 'reconnect to r2');
    release();
    // The attempt r1 held was requeued (ROUTER_SHUTDOWN); r2 picks it up from the feed.
    const status = createClient({ router: r2.address, status: mesh.statusAddress });
    expect(await status.result(taskId, { timeoutMs: 15_000 })).toEqual({ n: 1 });
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history.filter((t) => t.reason === 'ROUTER_SHUTDOWN')).toHaveLength(1);
    expect((await mesh.task(taskId)).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    health.close();
    client.close();
    status.close();
  });

  it('T24: a ConnectWorker stream whose handler ignores cancellation still lets shutdown finish within its grace period', async () => {
    let handlerStarted!: () => void;
    const handling = new Promise<void>((resolve) => (handlerStarted = resolve));
    const server = await startGrpcServer({
      name: 'router',
      config: loadConfig(routerConfigSpec, { port: '0', shutdownGrace: '1000' }, {}),
      logger: silent,
      services: [
        serviceEntry(
          RouterServiceDefinition,
          withUnimplemented(RouterServiceDefinition, {
            // eslint-disable-next-line require-yield
            async *connectWorker() {
              handlerStarted();
              // Ignores its signal on purpose: only forceShutdown can end this call.
              await new Promise((resolve) => setTimeout(resolve, 20_000).unref());
            },
          }),
        ),
      ],
    });
    const w = new RawWorker(server.address);
    w.hello('stubborn', ['work']);
    await within(handling, 5_000, 'stream handler running');
    const started = Date.now();
    await server.stop();
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(4_000);
    const status = await w.ended;
    expect([Status.UNAVAILABLE, Status.CANCELLED]).toContain(status.code);
    w.close();
  });
});
