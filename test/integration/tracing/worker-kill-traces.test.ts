import path from 'node:path';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { OtlpReceiver } from '../../../services/shared/otlp-receiver';
import { ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { within } from '../../helpers/processes';
import { eventually, linear } from '../../helpers/router-mesh';
import { checkTaskTrace, startTraceSink, STATUS } from '../../helpers/trace-checker';

jest.setTimeout(90_000);

const SLEEPY = path.join(__dirname, '../../fixtures/handlers/sleepy.ts');
const N = 40;

/**
 * T46: status, router and two workers as processes exporting OTLP/HTTP JSON with the
 * BatchSpanProcessor; worker A is killed with -9 while it runs attempts. Its unexported spans
 * are gone; everything else of each task's trace must be there and hang together.
 */
describe('traces when a worker is killed mid-task', () => {
  const mesh = new ProcessMesh();
  let receiver: OtlpReceiver | undefined;
  afterAll(async () => {
    await mesh.stop();
    await receiver?.close();
  });

  it('T46: kill -9 of a worker mid-task: its lost spans are tolerated; the retry attempts are traced in the same trace, under the same submit', async () => {
    const sink = await startTraceSink({ protocol: 'http/json', scheduleDelayMs: 500 });
    receiver = sink.receiver;
    const store = sink.store;
    mesh.env = sink.env;
    await mesh.startStatus(['--no-sync']);
    const router = await mesh.startRouter();
    await mesh.savePipeline(linear('t46', ['work']));
    const [a, b] = await Promise.all(
      ['a', 'b'].map((n) =>
        mesh.startWorker(SLEEPY, ['work'], ['--concurrency', '4'], mesh.routers, {
          OTEL_SERVICE_NAME: `dsat-worker-${n}`,
        }),
      ),
    );
    await mesh.waitForWorkers(['work'], mesh.routers[0], 2);
    const infoA = mesh.worker(a!.address);
    const workerA = (await infoA.getWorkerInfo({})).workerId;
    const feed = new ResultFeed();
    await feed.start(mesh.status, 't46');
    const ids = [
      ...(
        await submitMany(
          mesh.router(),
          Array.from({ length: N }, (_, i) => ({
            clientRef: `t46-${i}`,
            task: {
              pipeline: 't46',
              payload: Buffer.from(JSON.stringify({ i })),
              contentType: 'application/json',
              idempotencyKey: '',
              priority: 0,
              traceparent: '',
            },
          })),
        )
      ).values(),
    ];
    await eventually(
      async () => (await infoA.getWorkerInfo({})).inFlight >= 3,
      20_000,
      'worker A holding 3 attempts',
    );
    a!.p.kill('SIGKILL');
    await a!.p.exited;
    await feed.waitFor(N, 60_000);
    await feed.stop();

    const requeued: { id: string; traceId: string }[] = [];
    const traceIds = new Map<string, string>();
    for (const id of ids) {
      expect(feed.finals.get(id)?.map((t) => t.toState)).toEqual([TaskState.TASK_STATE_SUCCEEDED]);
      const task = (await mesh.status.getTask({ taskId: id })).task!;
      traceIds.set(id, task.traceId);
      const history = (await mesh.status.getTaskHistory({ taskId: id })).transitions;
      if (history.some((t) => t.reason === 'WORKER_LOST'))
        requeued.push({ id, traceId: task.traceId });
    }
    expect(requeued.length).toBeGreaterThanOrEqual(3);

    // Graceful stop of the rest flushes what they hold.
    const rest = [b!.p, router.p, mesh.procs[0]!];
    for (const p of rest) p.kill('SIGTERM');
    expect(await within(Promise.all(rest.map((p) => p.exited)), 20_000, 'graceful stop')).toEqual(
      rest.map(() => 0),
    );

    const expectation = { pipeline: 't46', stages: ['work'], lostWorkers: [workerA] };
    const problems: string[] = [];
    for (const id of ids) {
      const t = checkTaskTrace(store.trace(traceIds.get(id)!), id, expectation);
      problems.push(...t.problems.map((p) => `${id}: ${p}`));
    }
    expect(problems).toEqual([]);
    // The attempts A was running: dispatched to A with no process span (lost with A), and
    // retried on B: dispatch and a successful process, in the same trace, under the same submit.
    for (const { id, traceId } of requeued) {
      const t = checkTaskTrace(store.trace(traceId), id, expectation);
      const toA = t.dispatches.filter((d) => d.attributes['dsat.worker_id'] === workerA);
      expect(toA.length).toBeGreaterThanOrEqual(1);
      // (A may even have finished an attempt whose result died with it: that span is not it.)
      const retry = t.processes.find(
        (p) => p.statusCode === STATUS.ok && p.attributes['dsat.worker_id'] !== workerA,
      );
      expect(retry?.attributes['dsat.attempt']).toBeGreaterThan(1);
      const retryDispatch = t.dispatches.find((d) => d.spanId === retry?.parentSpanId);
      expect(retryDispatch?.parentSpanId).toBe(t.submit!.spanId);
      expect(toA.every((d) => d.parentSpanId === t.submit!.spanId)).toBe(true);
      expect(t.traceId).toBe(traceId);
    }
    // At least one of them: A was running it, so its span never ended and never left A.
    const lostSpans = requeued.filter(({ id, traceId }) => {
      const t = checkTaskTrace(store.trace(traceId), id, expectation);
      return t.processes.every((p) => p.attributes['dsat.worker_id'] !== workerA);
    });
    expect(lostSpans.length).toBeGreaterThanOrEqual(1);
  });
});
