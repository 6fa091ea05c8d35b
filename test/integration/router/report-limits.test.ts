import { Status } from 'nice-grpc-common';
import { refusal, violatedFields } from '../../helpers/refusal';
import type { CompleteAsyncRequest } from '../../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import type { TaskError, TaskProgress } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import { RawWorker } from '../../helpers/raw-worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, pipeline, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

const MB = 1024 * 1024;

const error = (over: Partial<TaskError>): TaskError => ({
  code: 'BOOM',
  message: 'it broke',
  retryable: false,
  details: {},
  ...over,
});

describe('the router refuses what the status service would, and holds reports to their limits', () => {
  let mesh: RouterMesh;
  let router: ReturnType<typeof createDsatClient<typeof RouterServiceDefinition>>;
  const raws: RawWorker[] = [];
  beforeAll(async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(
      pipeline('waits', [{ name: 'call', next: ['after'], async: true }, { name: 'after' }]),
    );
    await mesh.savePipeline(linear('beats', ['beat'], { maxAttempts: 1 }));
    router = createDsatClient(RouterServiceDefinition, createDsatChannel(mesh.router.address));
  });
  afterEach(() => {
    for (const r of raws.splice(0)) r.close();
  });
  afterAll(() => mesh.stop());

  /** A raw worker on `stage` with credit `n`, welcomed. */
  async function rawWorker(stage: string, n: number): Promise<RawWorker> {
    const w = new RawWorker(mesh.router.address);
    raws.push(w);
    w.hello(`w-${stage}-${raws.length}`, [stage], n);
    await w.until(() => w.welcome !== undefined, 5_000, 'welcome');
    w.credit(n);
    return w;
  }

  it.each([
    [
      'CancelTask of a task id with a leading "."',
      () => router.cancelTask({ taskId: '.abc', reason: '' }),
      'task_id',
    ],
    [
      'CompleteAsync of a token whose task id has a space',
      () => router.completeAsync(completion({ token: 'bad id!:parse:1' })),
      'token',
    ],
    [
      'CompleteAsync of a token with a 300-character task id',
      () => router.completeAsync(completion({ token: `${'t'.repeat(300)}:parse:1` })),
      'token',
    ],
  ] as const)('refuses %s with INVALID_ARGUMENT, not INTERNAL', async (_what, call, field) => {
    const err = await refusal(call());
    expect(Status[err.code]).toBe('INVALID_ARGUMENT');
    expect(violatedFields(err)).toEqual([field]);
  });

  function completion(over: Partial<CompleteAsyncRequest>): CompleteAsyncRequest {
    return { token: '', output: Buffer.from('{}'), contentType: '', error: undefined, ...over };
  }

  it('refuses a CompleteAsync error over the limits, naming the field, and the task waits on', async () => {
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('waits', { n: 1 });
    const w = await rawWorker('call', 1);
    await w.until(() => w.assigned.length === 1, 10_000, 'the assignment');
    w.result(w.assigned[0]!, '{"sent":true}');
    await w.until(() => w.acks.length === 1, 10_000, 'the ack');
    await eventually(async () => (await mesh.task(taskId)).state === TaskState.TASK_STATE_WAITING);
    const token = `${taskId}:call:1`;
    for (const [bad, field] of [
      [error({ details: { blob: 'x'.repeat(2 * MB) } }), 'error.details'],
      [error({ message: 'm'.repeat(5_000) }), 'error.message'],
      [error({ code: 'BAD\nCODE' }), 'error.code'],
      [error({ code: 'C'.repeat(129) }), 'error.code'],
    ] as const) {
      const err = await refusal(router.completeAsync(completion({ token, error: bad })));
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(violatedFields(err)).toEqual([field]);
    }
    expect((await mesh.task(taskId)).state).toBe(TaskState.TASK_STATE_WAITING);
    const ok = await router.completeAsync(
      completion({ token, error: error({ details: { why: 'no' } }) }),
    );
    expect(ok.state).toBe(TaskState.TASK_STATE_FAILED);
    expect((await mesh.task(taskId)).lastError).toMatchObject({
      code: 'BOOM',
      details: { why: 'no' },
    });
    client.close();
  });

  it.each([
    [
      '3.3 MB of details',
      { fraction: 0.5, message: '', details: Buffer.alloc(3.3 * MB) },
      'details',
    ],
    [
      'a 1 MB message',
      { fraction: 0.5, message: 'm'.repeat(MB), details: Buffer.alloc(0) },
      'message',
    ],
    ['a NaN fraction', { fraction: NaN, message: '', details: Buffer.alloc(0) }, 'fraction'],
    ['a fraction of 2', { fraction: 2, message: '', details: Buffer.alloc(0) }, 'fraction'],
  ] as const)(
    'fails the task of a heartbeat whose progress carries %s, and cancels the attempt',
    async (_what, progress: TaskProgress, field) => {
      const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
      const { taskId } = await client.submit('beats', { n: 1 });
      const w = await rawWorker('beat', 1);
      await w.until(() => w.assigned.length === 1, 10_000, 'the assignment');
      const a = w.assigned[0]!;
      w.send({
        kind: {
          $case: 'heartbeats',
          value: { heartbeats: [{ taskId: a.taskId, attempt: a.attempt, progress }] },
        },
      });
      await w.until(() => w.cancels.length === 1, 10_000, 'the cancel');
      expect(w.cancels[0]).toEqual({
        attempts: [{ taskId, attempt: 1 }],
        reason: 'INVALID_PROGRESS',
      });
      const task = await eventually(async () => {
        const t = await mesh.task(taskId);
        return t.state === TaskState.TASK_STATE_FAILED ? t : undefined;
      });
      expect(task.lastError?.code).toBe('INVALID_PROGRESS');
      expect(task.lastError?.message).toContain(`progress.${field}`);
      expect(task.progress?.details.length ?? 0).toBe(0);
      // A report for the cancelled attempt is refused with the same reason.
      w.result(a, '{}');
      await w.until(() => w.acks.length === 1, 10_000, 'the ack');
      expect(w.acks[0]).toMatchObject({ accepted: false, reason: 'INVALID_PROGRESS' });
      client.close();
    },
  );

  it('takes a Failure whose error is over the limits, cut to them, and the task stays readable', async () => {
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const w = await rawWorker('beat', 2);
    const ids = [
      (await client.submit('beats', { n: 1 })).taskId,
      (await client.submit('beats', { n: 2 })).taskId,
    ];
    await w.until(() => w.assigned.length === 2, 10_000, 'the assignments');
    const [big, odd] = [...w.assigned].sort(
      (x, y) => ids.indexOf(x.taskId) - ids.indexOf(y.taskId),
    );
    w.send({
      kind: {
        $case: 'failures',
        value: {
          failures: [
            {
              taskId: big!.taskId,
              attempt: 1,
              error: error({
                code: 'TooBig',
                message: 'x'.repeat(10_000),
                retryable: true,
                details: { blob: 'b'.repeat(2 * MB) },
              }),
            },
            { taskId: odd!.taskId, attempt: 1, error: error({ code: 'two\nlines' }) },
          ],
        },
      },
    });
    await w.until(() => w.acks.length === 2, 10_000, 'the acks');
    expect(w.acks.every((a) => a.accepted)).toBe(true);
    const bigTask = await mesh.task(big!.taskId);
    // One attempt and retryable: attempts spent, as the worker's error said.
    expect(bigTask.state).toBe(TaskState.TASK_STATE_DEAD_LETTERED);
    expect(bigTask.lastError?.code).toBe('TooBig');
    expect(bigTask.lastError?.message).toHaveLength(4096);
    expect(Object.keys(bigTask.lastError?.details ?? {})).toEqual(['dsat_details_dropped']);
    const oddTask = await mesh.task(odd!.taskId);
    expect(oddTask.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(oddTask.lastError?.code).toBe('HANDLER_ERROR');
    expect(oddTask.lastError?.message).toContain('"two\\nlines" is not an identifier');
    client.close();
  });
});
