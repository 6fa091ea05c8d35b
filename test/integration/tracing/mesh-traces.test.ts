import path from 'node:path';
import type { Task } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { OtlpReceiver } from '../../../services/shared/otlp-receiver';
import { parseTraceparent } from '../../../services/shared/traceparent';
import { jsonEntry, ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { within } from '../../helpers/processes';
import { eventually, linear } from '../../helpers/router-mesh';
import { checkTaskTrace, startTraceSink } from '../../helpers/trace-checker';

jest.setTimeout(90_000);

const HANDLERS = path.join(__dirname, '../../fixtures/handlers/three-stages.ts');
const STAGES = ['s1', 's2', 's3'];
const N = 20;
const EARLY = 5;

function entries(from: number, to: number) {
  return Array.from({ length: to - from }, (_, k) =>
    jsonEntry('t45', `t45-${from + k}`, { i: from + k }),
  );
}

/**
 * T45: status, tracker, router and one worker per stage as separate processes, exporting
 * OTLP/HTTP (the exporters' default, protobuf; T46 sends JSON) to a receiver in this test. The workers name themselves per stage
 * (OTEL_SERVICE_NAME) and hold their spans for ten minutes (OTEL_BSP_SCHEDULE_DELAY), so their
 * spans arrive only because SIGTERM flushes them.
 */
describe('traces across processes, exported over OTLP/HTTP', () => {
  const mesh = new ProcessMesh();
  let receiver: OtlpReceiver | undefined;
  afterAll(async () => {
    await mesh.stop();
    await receiver?.close();
  });

  it('T45: 20 tasks, each one trace over all stages and 4+ services; the traceparent outlives a router kill -9 (read back from LevelDB); SIGTERM flushes', async () => {
    const sink = await startTraceSink({ scheduleDelayMs: 200 });
    receiver = sink.receiver;
    const store = sink.store;
    mesh.env = sink.env;
    await mesh.startStatus(['--no-sync']);
    const tracker = (await mesh.startTracker()).p;
    const first = await mesh.startRouter();
    const port = first.address.split(':').pop()!;
    await mesh.savePipeline(linear('t45', STAGES));

    // Queued before any worker exists, then the router dies with them in its queue.
    const early = [...(await submitMany(mesh.router(), entries(0, EARLY))).values()];
    const taskOf = new Map<string, Task>();
    // A task's spans, found through the trace id its record keeps.
    const submitted = (id: string) =>
      store.trace(parseTraceparent(taskOf.get(id)?.traceparent)?.traceId ?? '0'.repeat(32));
    for (const id of early) taskOf.set(id, (await mesh.status.getTask({ taskId: id })).task!);
    await eventually(
      () => early.every((id) => submitted(id).some((s) => s.name === 'dsat.submit')),
      10_000,
      'the submit spans of the early tasks',
    );
    first.p.kill('SIGKILL');
    await first.p.exited;
    const router = await mesh.startRouter(['--port', port]);
    expect(router.address).toBe(first.address);

    const workers = await Promise.all(
      STAGES.map((s) =>
        mesh.startWorker(HANDLERS, [s], [], mesh.routers.slice(-1), {
          OTEL_SERVICE_NAME: `dsat-worker-${s}`,
          OTEL_BSP_SCHEDULE_DELAY: '600000',
        }),
      ),
    );
    const feed = new ResultFeed();
    await feed.start(mesh.status, 't45');
    const late = [...(await submitMany(mesh.router(), entries(EARLY, N))).values()];
    await feed.waitFor(N, 60_000);
    await feed.stop();
    const ids = [...early, ...late];
    for (const id of ids) {
      expect(feed.finals.get(id)?.map((t) => t.toState)).toEqual([TaskState.TASK_STATE_SUCCEEDED]);
      if (!taskOf.has(id)) taskOf.set(id, (await mesh.status.getTask({ taskId: id })).task!);
    }
    // Nothing of the workers is here yet: their spans wait in their batch processors.
    expect(
      ids.flatMap((id) => submitted(id)).filter((s) => s.name.startsWith('dsat.process')),
    ).toHaveLength(0);

    // Graceful stop: workers, router, tracker, status, each flushing its spans on SIGTERM.
    const status = mesh.procs[0]!;
    for (const group of [workers.map((w) => w.p), [router.p], [tracker], [status]]) {
      for (const p of group) p.kill('SIGTERM');
      const codes = await within(Promise.all(group.map((p) => p.exited)), 20_000, 'graceful stop');
      expect(codes).toEqual(group.map(() => 0));
    }

    const expectation = { pipeline: 't45', stages: STAGES };
    const problems: string[] = [];
    for (const id of ids) {
      const task = taskOf.get(id)!;
      const t = checkTaskTrace(submitted(id), id, expectation);
      problems.push(...t.problems.map((p) => `${id}: ${p}`));
      expect(t.traceId).toBe(task.traceId);
      // The stored traceparent is the submit span's context: what every stage hangs under.
      expect(parseTraceparent(task.traceparent)?.spanId).toBe(t.submit?.spanId);
      const services = new Set(t.all.map((s) => s.serviceName));
      expect(services.size).toBeGreaterThanOrEqual(4);
      expect([...services]).toEqual(
        expect.arrayContaining(['dsat-router', ...STAGES.map((s) => `dsat-worker-${s}`)]),
      );
    }
    expect(problems).toEqual([]);
  });
});
