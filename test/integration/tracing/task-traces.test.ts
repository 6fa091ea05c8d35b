import { createClient } from '../../../sdk/client';
import type { StageHandler, Worker } from '../../../sdk/worker';
import { createWorker } from '../../../sdk/worker';
import { loadConfig, trackerConfigSpec } from '../../../services/shared/config';
import { parseTraceparent } from '../../../services/shared/traceparent';
import type { TrackerHandle } from '../../../services/tracker/server';
import { startTrackerServer } from '../../../services/tracker/server';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, pipeline, silent, startRouterMesh } from '../../helpers/router-mesh';
import {
  KIND,
  STATUS,
  STREAM_METHODS,
  checkTaskTrace,
  checkTaskTraces,
  startTestTracing,
} from '../../helpers/trace-checker';

jest.setTimeout(40_000);

/**
 * T42–T44: router, status (LevelDB in a temp dir), tracker and workers in this process on real
 * ports, with OpenTelemetry started here as the services start it, keeping spans in memory.
 */
describe('one trace per task, in process', () => {
  const tracing = startTestTracing();
  let mesh: RouterMesh;
  let tracker: TrackerHandle | undefined;
  const workers: Worker[] = [];
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await tracker?.shutdown();
    tracker = undefined;
    await mesh?.stop();
  });
  afterAll(() => tracing.telemetry.shutdown());

  const work = async (handlers: Record<string, StageHandler>, concurrency = 8) => {
    const w = createWorker({
      routers: [mesh.router.address],
      logger: silent,
      handlers,
      concurrency,
    });
    workers.push(w);
    await w.connected();
    return w;
  };

  it('T42: a task through three stages: submit (PRODUCER) → dispatch → process (CONSUMER) per stage, one trace, attributes and parents right', async () => {
    expect(tracing.telemetry.enabled).toBe(true);
    mesh = await startRouterMesh();
    const stages = ['parse', 'enrich', 'store'];
    await mesh.savePipeline(linear('t42', stages));
    const seen: { stage: string; traceparent: string }[] = [];
    const handler: StageHandler = (x: unknown, ctx) => {
      seen.push({ stage: ctx.stage, traceparent: ctx.traceparent });
      return x;
    };
    const w = await work({ parse: handler, enrich: handler, store: handler });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId, traceId } = await client.submit('t42', { n: 1 });
    expect(await client.result(taskId)).toEqual({ n: 1 });
    client.close();

    const t = await eventually(() => {
      const c = checkTaskTrace(tracing.spans(), taskId, { pipeline: 't42', stages });
      return c.problems.length === 0 && c;
    }).catch(() => checkTaskTrace(tracing.spans(), taskId, { pipeline: 't42', stages }));
    expect(t.problems).toEqual([]);
    expect(t.traceId).toBe(traceId);
    expect(t.submit).toMatchObject({ kind: KIND.producer, statusCode: STATUS.ok });
    expect(t.submit!.attributes).toMatchObject({
      'dsat.task_id': taskId,
      'dsat.pipeline': 't42',
      'dsat.stage': 'parse',
      'messaging.system': 'dsat',
      'messaging.operation.type': 'send',
      'messaging.destination.name': 'parse',
      'messaging.message.id': taskId,
    });
    expect(t.dispatches.map((d) => d.name)).toEqual(stages.map((s) => `dsat.dispatch ${s}`));
    expect(t.processes.map((p) => p.name)).toEqual(stages.map((s) => `dsat.process ${s}`));
    for (const p of t.processes) {
      expect(p).toMatchObject({ kind: KIND.consumer, statusCode: STATUS.ok });
      expect(p.attributes).toMatchObject({
        'dsat.task_id': taskId,
        'dsat.attempt': 1,
        'dsat.worker_id': w.workerId,
        'messaging.operation.type': 'process',
      });
    }
    // The task stores the submit span's context, and each Assign carries its dispatch span's.
    const task = await mesh.task(taskId);
    expect(parseTraceparent(task.traceparent)).toMatchObject({
      traceId,
      spanId: t.submit!.spanId,
    });
    expect(seen.map((s) => [s.stage, parseTraceparent(s.traceparent)?.spanId])).toEqual(
      t.dispatches.map((d) => [d.attributes['dsat.stage'], d.spanId]),
    );
    // The SubmitTask call is traced (client and server span), and the submit hangs under it.
    const server = t.all.find((s) => s.spanId === t.submit!.parentSpanId);
    expect(server).toMatchObject({
      name: 'dsat.router.v1.RouterService/SubmitTask',
      kind: KIND.server,
    });
    expect(t.all.find((s) => s.spanId === server!.parentSpanId)?.kind).toBe(KIND.client);
  });

  it("a fan-out branch runs in its task's trace: its spans hang under the submit and name the parent task", async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(
      pipeline('t42-fan', [
        { name: 'split', next: ['left', 'right'] },
        { name: 'left' },
        { name: 'right' },
      ]),
    );
    const pass: StageHandler = (x: unknown) => x;
    await work({ split: pass, left: pass, right: pass });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId, traceId } = await client.submit('t42-fan', { n: 1 });
    expect(await client.result(taskId)).toEqual({ n: 1 });
    const branchId = (await client.get(taskId)).branches[0]!.branchId;
    expect(await client.result(branchId)).toEqual({ n: 1 });
    client.close();

    const parent = await eventually(() => {
      const c = checkTaskTrace(tracing.spans(), taskId, {
        pipeline: 't42-fan',
        stages: ['split', 'left'],
      });
      return c.problems.length === 0 && c;
    }).catch(() =>
      checkTaskTrace(tracing.spans(), taskId, { pipeline: 't42-fan', stages: ['split', 'left'] }),
    );
    expect(parent.problems).toEqual([]);
    const branchSpans = await eventually(() => {
      const mine = tracing.spans().filter((s) => s.attributes['dsat.task_id'] === branchId);
      return mine.length >= 2 && mine;
    });
    const dispatch = branchSpans.find((s) => s.name === 'dsat.dispatch right')!;
    const processed = branchSpans.find((s) => s.name === 'dsat.process right')!;
    expect(dispatch).toMatchObject({ traceId, parentSpanId: parent.submit!.spanId });
    expect(processed).toMatchObject({
      traceId,
      parentSpanId: dispatch.spanId,
      statusCode: STATUS.ok,
    });
    for (const s of [dispatch, processed]) {
      expect(s.attributes).toMatchObject({ 'dsat.parent_task_id': taskId, 'dsat.stage': 'right' });
    }
  });

  it('T43: a run timeout and a retry: two process spans (attempt 1 ERROR, attempt 2 OK) under the same creation context', async () => {
    mesh = await startRouterMesh();
    tracker = await startTrackerServer(
      loadConfig(
        trackerConfigSpec,
        { port: '0', statusAddress: mesh.statusAddress, shutdownGrace: '1s' },
        {},
      ),
      { logger: silent },
    );
    await mesh.savePipeline(linear('t43', ['slow'], { runTimeoutMs: 800, maxAttempts: 3 }));
    await work({
      // T08's handler: the first attempt works on past the run timeout, deaf to its signal
      // (it returns once the attempt has been taken away, or after 20 s at worst).
      slow: async (x: unknown, ctx) => {
        if (ctx.attempt === 1) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, 20_000);
            ctx.signal.addEventListener('abort', () => {
              clearTimeout(t);
              setTimeout(resolve, 100);
            });
          });
        }
        return x;
      },
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('t43', { n: 43 });
    expect(await client.result(taskId, { timeoutMs: 30_000 })).toEqual({ n: 43 });
    client.close();
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history.some((h) => h.reason === 'RUN_TIMEOUT')).toBe(true);

    const expectation = { pipeline: 't43', stages: ['slow'] };
    const t = await eventually(() => {
      const c = checkTaskTrace(tracing.spans(), taskId, expectation);
      return c.processes.length === 2 && c;
    }, 10_000);
    expect(t.problems).toEqual([]);
    const byAttempt = (n: number) => t.processes.find((p) => p.attributes['dsat.attempt'] === n);
    expect(byAttempt(1)).toMatchObject({ statusCode: STATUS.error });
    expect(byAttempt(1)!.statusMessage).toMatch(/TIMED_OUT|RUN_TIMEOUT|CANCEL/);
    expect(byAttempt(2)).toMatchObject({ statusCode: STATUS.ok });
    // Both attempts: same trace, each under its own dispatch, both dispatches under the submit.
    expect(new Set(t.processes.map((p) => p.traceId))).toEqual(new Set([t.traceId]));
    const parents = t.processes.map(
      (p) => t.dispatches.find((d) => d.spanId === p.parentSpanId)?.parentSpanId,
    );
    expect(parents).toEqual([t.submit!.spanId, t.submit!.spanId]);
  });

  it('T44: 100 tasks over one long-lived worker stream: no task span is a child of a stream span, and no stream is traced', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('t44', ['a', 'b']));
    const w = await work({ a: (x: unknown) => x, b: (x: unknown) => x }, 16);
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const ids: string[] = [];
    for (let i = 0; i < 100; i += 20) {
      const batch = await Promise.all(
        Array.from({ length: 20 }, (_, j) => client.submit('t44', { i: i + j })),
      );
      ids.push(...batch.map((s) => s.taskId));
    }
    await Promise.all(ids.map((id) => client.result(id, { timeoutMs: 30_000 })));
    client.close();
    // Both stages of every task ran on the one worker, over its one stream (acks come a bit later).
    await eventually(() => w.info().completed === 200, 5_000, '200 acks');
    expect(w.info().refused).toBe(0);

    const expectation = { pipeline: 't44', stages: ['a', 'b'] };
    const { traces, problems } = await eventually(() => {
      const c = checkTaskTraces(tracing.spans(), ids, expectation);
      return c.problems.length === 0 && c;
    }).catch(() => checkTaskTraces(tracing.spans(), ids, expectation));
    expect(problems).toEqual([]);
    expect(new Set([...traces.values()].map((t) => t.traceId)).size).toBe(100);
    const all = tracing.spans();
    // The streams that carried these tasks have no span; unary calls do.
    expect(all.filter((s) => STREAM_METHODS.includes(s.name))).toEqual([]);
    for (const t of traces.values()) {
      const calls = t.all.filter((s) => s.name === 'dsat.router.v1.RouterService/SubmitTask');
      expect(calls.map((s) => s.kind).sort()).toEqual([KIND.server, KIND.client]);
    }
    // And every task span's parent is a span of its own task (the submit's: its SubmitTask call).
    const byId = new Map(all.map((s) => [s.spanId, s]));
    for (const t of traces.values()) {
      for (const s of [...t.dispatches, ...t.processes]) {
        expect(byId.get(s.parentSpanId)?.attributes['dsat.task_id']).toBe(t.taskId);
      }
    }
  });
});
