import { Status } from 'nice-grpc-common';
import { BadRequest, RichClientError } from 'nice-grpc-error-details';
import type { Assignment, ForwardTasksResponse } from '../../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import { createWorker } from '../../../sdk/worker';
import type { RouterHandle } from '../../../services/router/server';
import { startRouterServer } from '../../../services/router/server';
import {
  loadConfig,
  routerConfigSpec,
  statusConfigSpec,
  trackerConfigSpec,
} from '../../../services/shared/config';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import type { ServiceHandle } from '../../../services/shared/service-host';
import { startStatusServer } from '../../../services/status/server';
import { startTrackerServer } from '../../../services/tracker/server';
import type { StatusClient } from '../../helpers/mesh-harness';
import { statusClient, trackerClient } from '../../helpers/mesh-harness';
import { RawWorker } from '../../helpers/raw-worker';
import { eventually, linear, silent } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(30_000);

/**
 * Two router shards over one status service and a tracker: `pre` serves stage pre, `work` serves
 * stage work, and a task of pipeline `two` is forwarded from the first to the second.
 */
describe('ForwardTasks between router shards', () => {
  const dir = tempDir();
  let status: ServiceHandle;
  let tracker: ServiceHandle;
  let pre: RouterHandle;
  let work: RouterHandle;
  let store: StatusClient;
  let one = 0;
  const raws: RawWorker[] = [];

  const startRouter = (id: string, stages: string) =>
    startRouterServer(
      loadConfig(
        routerConfigSpec,
        {
          port: '0',
          routerId: id,
          stages,
          statusAddress: status.address,
          trackerAddress: tracker.address,
          shutdownGrace: '1000',
        },
        {},
      ),
      { logger: silent },
    );

  beforeAll(async () => {
    status = await startStatusServer(
      loadConfig(statusConfigSpec, { port: '0', dataDir: dir.path, sync: false }, {}),
      { logger: silent },
    );
    tracker = await startTrackerServer(
      loadConfig(
        trackerConfigSpec,
        { port: '0', statusAddress: status.address, shutdownGrace: '1s' },
        {},
      ),
      { logger: silent },
    );
    store = statusClient(status.address);
    await store.savePipeline({ pipeline: linear('two', ['pre', 'work']) });
    one = (await store.savePipeline({ pipeline: linear('one', ['work']) })).pipeline!.version;
    pre = await startRouter('r-pre', 'pre');
    work = await startRouter('r-work', 'work');
    await Promise.all([pre.ready, work.ready]);
  });
  afterEach(() => {
    for (const r of raws.splice(0)) r.close();
  });
  afterAll(async () => {
    await pre.shutdown();
    await work.shutdown();
    await tracker.shutdown();
    await status.shutdown();
    dir.cleanup();
  });

  async function forward(tasks: Assignment[]): Promise<ForwardTasksResponse[]> {
    const client = createDsatClient(RouterServiceDefinition, createDsatChannel(work.address));
    const out: ForwardTasksResponse[] = [];
    for await (const res of client.forwardTasks(
      (async function* () {
        yield { tasks };
      })(),
    )) {
      out.push(res);
    }
    return out;
  }

  async function refusal(tasks: Assignment[]): Promise<RichClientError> {
    const err = await forward(tasks).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (err === undefined) throw new Error('the forward was accepted');
    expect(err).toBeInstanceOf(RichClientError);
    return err as RichClientError;
  }

  const entry = (over: Partial<Assignment> = {}): Assignment => ({
    taskId: 'fake-task-1',
    stage: 'work',
    attempt: 1,
    pipeline: 'one',
    input: { data: Buffer.from('{}'), contentType: 'application/json' },
    deadline: undefined,
    traceparent: '',
    progress: undefined,
    pipelineVersion: one,
    priority: 0,
    hops: 0,
    parentTaskId: '',
    ...over,
  });

  async function rawWorker(n: number): Promise<RawWorker> {
    const w = new RawWorker(work.address);
    raws.push(w);
    w.hello(`raw-${raws.length}`, ['work'], n);
    await w.until(() => w.welcome !== undefined, 5_000, 'welcome');
    w.credit(n);
    return w;
  }

  it.each([
    ['an empty task id', { taskId: '' }, 'task_id'],
    ['a task id with a space', { taskId: 'bad id' }, 'task_id'],
    ['attempt 0', { attempt: 0 }, 'attempt'],
    ['attempt 4000000000', { attempt: 4_000_000_000 }, 'attempt'],
    ['priority 999999', { priority: 999_999 }, 'priority'],
    ['a stage this router does not serve', { stage: 'pre', pipeline: 'two' }, 'stage'],
    ['a pipeline name that is none', { pipeline: 'Not A Name' }, 'pipeline'],
    ['pipeline version 0', { pipelineVersion: 0 }, 'pipeline_version'],
    ['hops at max_hops', { hops: 50 }, 'hops'],
    ['a malformed traceparent', { traceparent: '00-xyz' }, 'traceparent'],
    [
      'progress over the limits',
      { progress: { fraction: NaN, message: '', details: Buffer.alloc(0) } },
      'progress.fraction',
    ],
  ] as const)(
    'refuses an entry with %s, naming tasks[1].field, and takes none',
    async (_w, over, field) => {
      const w = await rawWorker(4);
      const err = await refusal([entry({ taskId: 'fine-1' }), entry(over)]);
      expect(Status[err.code]).toBe('INVALID_ARGUMENT');
      const bad = err.extra.find((d) => d.$type === BadRequest.$type) as BadRequest;
      expect(bad.fieldViolations.map((v) => v.field)).toEqual([`tasks[1].${field}`]);
      expect(work.dispatcher.holding('fine-1')).toBeUndefined();
      await new Promise((r) => setTimeout(r, 100));
      expect(w.assigned).toEqual([]);
    },
  );

  it('refuses a pipeline version the store does not have with NOT_FOUND', async () => {
    const err = await refusal([entry({ pipelineVersion: 99 })]);
    expect(err.code).toBe(Status.NOT_FOUND);
    expect(err.details).toContain('tasks[0]');
  });

  it('never hands a worker a forged task: it waits for a feed announcement that never comes', async () => {
    const w = await rawWorker(4);
    expect(await forward([entry({ taskId: 'fake-task-1' })])).toEqual([{ taskIds: [] }]);
    await new Promise((r) => setTimeout(r, 300));
    expect(w.assigned).toEqual([]);
    expect(work.dispatcher.holding('fake-task-1')).toBeUndefined();
  });

  it('does not let a forward of attempt 2 replace the running attempt 1', async () => {
    const client = createClient({ router: work.address, status: status.address });
    const w = await rawWorker(1);
    const { taskId } = await client.submit('one', { n: 1 });
    await w.until(() => w.assigned.length === 1, 10_000, 'the assignment');
    await eventually(
      async () => (await store.getTask({ taskId })).task?.state === TaskState.TASK_STATE_RUNNING,
    );
    const err = await refusal([entry({ taskId, attempt: 2 })]);
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.details).toContain('is RUNNING at stage work, attempt 1');
    const bad = err.extra.find((d) => d.$type === BadRequest.$type) as BadRequest;
    expect(bad.fieldViolations.map((v) => v.field)).toEqual(['tasks[0].attempt']);
    // Attempt 1 runs on: no Cancel, and its result is taken.
    expect(work.dispatcher.holding(taskId)).toEqual({ stage: 'work', attempt: 1 });
    w.result(w.assigned[0]!, '{"done":true}');
    await w.until(() => w.acks.length === 1, 10_000, 'the ack');
    expect(w.cancels).toEqual([]);
    expect(w.acks[0]).toMatchObject({ accepted: true });
    expect((await store.getTask({ taskId })).task?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    client.close();
  });

  it('still forwards real tasks at once, without waiting for the feed lookup', async () => {
    const workers = [
      createWorker({ routers: [pre.address], logger: silent, handlers: { pre: (x) => x } }),
      createWorker({ routers: [work.address], logger: silent, handlers: { work: (x) => x } }),
    ];
    const client = createClient({ router: pre.address, status: status.address });
    try {
      const resolver = trackerClient(tracker.address);
      await eventually(
        async () => (await resolver.resolveStage({ stage: 'work' })).routers.length === 1,
      );
      for (let i = 0; i < 5; i++) {
        const start = performance.now();
        const { taskId } = await client.submit('two', { i });
        const task = await client.result(taskId, { timeoutMs: 10_000 });
        expect(task).toEqual({ i });
        // The feed's own lookup of a task queued by another router waits a second for the forward.
        expect(performance.now() - start).toBeLessThan(900);
      }
    } finally {
      client.close();
      await Promise.all(workers.map((w) => w.stop()));
    }
  });
});
