import { TaskState } from '../../../gen/dsat/task/v1/task';
import { TransitionWrite } from '../../../gen/dsat/status/v1/status';
import { createClient } from '../../../sdk/client';
import type { Worker, StageHandler } from '../../../sdk/worker';
import { createWorker } from '../../../sdk/worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

/** A write as another service (the tracker, another router) would make it. */
function write(
  over: Partial<TransitionWrite> & Pick<TransitionWrite, 'taskId' | 'toState'>,
): TransitionWrite {
  return TransitionWrite.fromPartial({
    transitionId: `test-${Math.random().toString(36).slice(2)}`,
    ...over,
  });
}

describe('the lease, and the feed of other writers', () => {
  let mesh: RouterMesh;
  const workers: Worker[] = [];
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await mesh?.stop();
  });
  const work = async (handlers: Record<string, StageHandler>, autoHeartbeat = true) => {
    const w = createWorker({
      routers: [mesh.router.address],
      logger: silent,
      handlers,
      autoHeartbeat,
    });
    workers.push(w);
    await w.connected();
    return w;
  };

  it('a running attempt without heartbeats loses its lease: TIMED_OUT then RETRY_WAIT, its handler is aborted, and the retry resumes from its progress', async () => {
    mesh = await startRouterMesh({ router: { heartbeatInterval: '100ms' } });
    await mesh.savePipeline(linear('leased', ['work'], { heartbeatTimeoutMs: 600 }));
    const seen: { attempt: number; previous?: string; abort?: string }[] = [];
    await work(
      {
        work: async (_x, ctx) => {
          const run: (typeof seen)[number] = {
            attempt: ctx.attempt,
            previous: ctx.previousProgress?.message,
          };
          seen.push(run);
          if (ctx.attempt > 1) return { done: true };
          ctx.heartbeat({ fraction: 0.3, message: 'page 3 of 10' });
          // Then silence: no more heartbeats (autoHeartbeat is off), the work hangs.
          await new Promise((_, reject) =>
            ctx.signal.addEventListener('abort', () => {
              run.abort = String((ctx.signal.reason as Error).message);
              reject(new Error('aborted'));
            }),
          );
          return undefined;
        },
      },
      false,
    );
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('leased', { x: 1 });
    await eventually(
      async () => (await mesh.task(taskId)).state === TaskState.TASK_STATE_RETRY_WAIT,
      10_000,
      'RETRY_WAIT',
    );
    await eventually(() => seen[0]?.abort !== undefined, 5_000, 'abort');
    expect(seen[0]!.abort).toContain('LEASE_LOST');
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history.map((t) => [TaskState[t.toState], t.reason]).slice(-2)).toEqual([
      ['TASK_STATE_TIMED_OUT', 'HEARTBEAT_TIMEOUT'],
      ['TASK_STATE_RETRY_WAIT', 'HEARTBEAT_TIMEOUT'],
    ]);
    // The tracker's part, done here by hand: the backoff is over, attempt 2 is queued.
    const { outcomes } = await mesh.status.commitTransitions({
      writes: [
        write({
          taskId,
          expectedState: TaskState.TASK_STATE_RETRY_WAIT,
          expectedAttempt: 1,
          toState: TaskState.TASK_STATE_QUEUED,
          attempt: 2,
          reason: 'RETRY',
        }),
      ],
    });
    expect(outcomes[0]!.code).toBe(0);
    // The router learns it from the feed, reads the task and dispatches attempt 2.
    expect(await client.result(taskId, { timeoutMs: 10_000 })).toEqual({ done: true });
    expect(seen[1]).toMatchObject({ attempt: 2, previous: 'page 3 of 10' });
    expect(mesh.router.dispatcher.leaseLosses).toBe(1);
    client.close();
  });

  it('an attempt cancelled by another router is aborted here through the feed', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('cancel-elsewhere', ['work']));
    let aborted: string | undefined;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const w = await work({
      work: (_x, ctx) =>
        new Promise((_, reject) => {
          started();
          ctx.signal.addEventListener('abort', () => {
            aborted = String((ctx.signal.reason as Error).message);
            reject(new Error('aborted'));
          });
        }),
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('cancel-elsewhere', { x: 1 });
    await running;
    await eventually(async () => (await mesh.task(taskId)).state === TaskState.TASK_STATE_RUNNING);
    const { outcomes } = await mesh.status.commitTransitions({
      writes: [
        write({
          taskId,
          expectedState: TaskState.TASK_STATE_RUNNING,
          expectedAttempt: 1,
          toState: TaskState.TASK_STATE_CANCELLED,
          reason: 'CANCEL_REQUESTED',
        }),
      ],
    });
    expect(outcomes[0]!.code).toBe(0);
    await eventually(() => aborted !== undefined, 5_000, 'abort through the feed');
    expect(aborted).toContain('CANCEL_REQUESTED');
    await eventually(() => w.info().inFlight === 0);
    expect(mesh.router.dispatcher.counts().held).toBe(0);
    client.close();
  });
});
