import { Status } from 'nice-grpc-common';
import type { Transition } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { DsatTaskClient } from '../../../sdk/client';
import { createClient } from '../../../sdk/client';
import type { Worker, StageHandler } from '../../../sdk/worker';
import { createWorker, stageOutput } from '../../../sdk/worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, pipeline, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

describe('pipelines', () => {
  let mesh: RouterMesh;
  let client: DsatTaskClient;
  const workers: Worker[] = [];
  beforeAll(async () => {
    mesh = await startRouterMesh();
    client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
  });
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  });
  afterAll(async () => {
    client.close();
    await mesh.stop();
  });
  const work = async (handlers: Record<string, StageHandler>) => {
    const w = createWorker({ routers: [mesh.router.address], logger: silent, handlers });
    workers.push(w);
    await w.connected();
    return w;
  };
  const history = async (taskId: string) =>
    (await mesh.status.getTaskHistory({ taskId })).transitions;

  it('routes a result to the next edge it chooses, and runs nothing on the other', async () => {
    await mesh.savePipeline(
      pipeline('sizes', [
        { name: 'classify', next: ['small', 'large'] },
        { name: 'small' },
        { name: 'large' },
      ]),
    );
    const ran: string[] = [];
    await work({
      classify: (x) => stageOutput(x, { next: [(x as { n: number }).n > 10 ? 'large' : 'small'] }),
      small: (x) => (ran.push('small'), { ...(x as object), size: 'small' }),
      large: (x) => (ran.push('large'), { ...(x as object), size: 'large' }),
    });
    const a = await client.submit('sizes', { n: 3 });
    const b = await client.submit('sizes', { n: 30 });
    expect(await client.result(a.taskId)).toEqual({ n: 3, size: 'small' });
    expect(await client.result(b.taskId)).toEqual({ n: 30, size: 'large' });
    expect(ran.sort()).toEqual(['large', 'small']);
  });

  it('refuses a pipeline whose max_hops is below its longest path, where every task would end in HOP_LIMIT (plans.test covers the router guard)', async () => {
    const p = linear('long', ['h1', 'h2', 'h3']);
    const err = await mesh.savePipeline({ ...p, maxHops: 2 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Status.INVALID_ARGUMENT });
    expect((err as Error).message).toMatch(
      /max_hops: 2 is less than the 3 stages of the longest path/,
    );
    expect(await client.submit('long', { x: 1 }).catch((e: unknown) => e)).toMatchObject({
      code: Status.NOT_FOUND,
    });
  });

  it('a PUBLISH stage publishes its payload on the feed and moves on without a worker', async () => {
    await mesh.savePipeline(
      pipeline('news', [
        { name: 'write', next: ['announce'] },
        { name: 'announce', next: ['archive'], publish: true },
        { name: 'archive', next: ['shout'] },
        { name: 'shout', publish: true },
      ]),
    );
    const { revision } = await mesh.status.getStoreStats({});
    const feed: Transition[] = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const res of mesh.status.watchEvents(
        {
          filter: { pipeline: 'news', states: [], stage: '', actionKey: '' },
          fromRevision: revision,
        },
        { signal: abort.signal },
      )) {
        feed.push(...res.transitions);
      }
    })().catch(() => undefined);
    await work({
      write: (x) => ({ ...(x as object), written: true }),
      archive: (x) => ({ ...(x as object), archived: true }),
    });
    const { taskId } = await client.submit('news', { title: 'hi' });
    expect(await client.result(taskId)).toEqual({ title: 'hi', written: true, archived: true });
    await eventually(() => feed.some((t) => t.toState === TaskState.TASK_STATE_SUCCEEDED));
    abort.abort();
    await watching;
    const published = feed.filter((t) => t.reason === 'PUBLISHED');
    expect(published.map((t) => [t.stage, JSON.parse(t.payload!.data.toString())])).toEqual([
      ['archive', { title: 'hi', written: true }],
      ['shout', { title: 'hi', written: true, archived: true }],
    ]);
    // Nothing was ever dispatched at a PUBLISH stage.
    const h = await history(taskId);
    expect(
      h.filter((t) => t.toState === TaskState.TASK_STATE_DISPATCHED).map((t) => t.stage),
    ).toEqual(['write', 'archive']);
  });

  it('an ASYNC stage waits for CompleteAsync, whose output feeds the next stage; a repeat is OK', async () => {
    await mesh.savePipeline(
      pipeline('approval', [{ name: 'ask', next: ['apply'], async: true }, { name: 'apply' }]),
    );
    const tokens: string[] = [];
    await work({
      ask: (_x, ctx) => {
        tokens.push(ctx.asyncToken);
        return null;
      },
      apply: (x) => ({ applied: x }),
    });
    const { taskId } = await client.submit('approval', { amount: 5 });
    await eventually(async () => (await mesh.task(taskId)).state === TaskState.TASK_STATE_WAITING);
    const waiting = await mesh.task(taskId);
    expect(waiting.asyncToken).toBe(tokens[0]);
    await expect(client.completeAsync('not-a-token', {})).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      field: 'token',
    });
    const done = await client.completeAsync(tokens[0]!, { approved: true });
    expect(done).toEqual({ taskId, state: TaskState.TASK_STATE_QUEUED });
    // The answer was lost, say, and the outside system retries: OK again, nothing changes twice.
    await expect(client.completeAsync(tokens[0]!, { approved: true })).resolves.toMatchObject({
      taskId,
    });
    expect(await client.result(taskId)).toEqual({ applied: { approved: true } });
    const h = await history(taskId);
    expect(h.filter((t) => t.reason === 'ASYNC_COMPLETED')).toHaveLength(1);
  });

  it('nested ASYNC resumes last in, first out: the inner wait is answered before the outer', async () => {
    await mesh.savePipeline(
      pipeline('outer', [
        { name: 'outer-wait', next: ['outer-done'], async: true },
        { name: 'outer-done' },
      ]),
    );
    await mesh.savePipeline(
      pipeline('inner', [
        { name: 'inner-wait', next: ['inner-done'], async: true },
        { name: 'inner-done' },
      ]),
    );
    const order: string[] = [];
    const innerTokens: string[] = [];
    await work({
      // The outer stage hands its token to an inner task, which answers it when it ends.
      'outer-wait': async (x, ctx) => {
        order.push('outer waits');
        await client.submit('inner', { outerToken: ctx.asyncToken, from: x });
        return null;
      },
      'inner-wait': (_x, ctx) => {
        order.push('inner waits');
        innerTokens.push(ctx.asyncToken);
        return null;
      },
      'inner-done': async (x) => {
        const { outerToken, reply } = x as { outerToken: string; reply: string };
        order.push('inner resumes');
        await client.completeAsync(outerToken, { inner: reply });
        return x;
      },
      'outer-done': (x) => {
        order.push('outer resumes');
        return x;
      },
    });
    const { taskId } = await client.submit('outer', { q: 1 });
    await eventually(() => innerTokens.length === 1, 10_000, 'inner wait');
    const inner = await mesh.task(innerTokens[0]!.split(':')[0]!);
    const innerInput = JSON.parse(inner.input!.data.toString()) as { outerToken: string };
    await client.completeAsync(innerTokens[0]!, {
      outerToken: innerInput.outerToken,
      reply: 'yes',
    });
    expect(await client.result(taskId)).toEqual({ inner: 'yes' });
    expect(order).toEqual(['outer waits', 'inner waits', 'inner resumes', 'outer resumes']);
  });

  it('fans out: the task goes on to its first next stage, each other one runs as a branch task in the same trace', async () => {
    await mesh.savePipeline(
      pipeline('fan', [
        { name: 'split', next: ['left', 'right'] },
        { name: 'left' },
        { name: 'right', next: ['tail'] },
        { name: 'tail' },
      ]),
    );
    const ran: string[] = [];
    const step = (name: string) => (x: unknown) => {
      ran.push(name);
      return { ...(x as object), [name]: true };
    };
    await work({
      split: step('split'),
      left: step('left'),
      right: step('right'),
      tail: step('tail'),
    });
    const { taskId, traceId } = await client.submit('fan', { x: 1 });
    expect(await client.result(taskId)).toEqual({ x: 1, split: true, left: true });
    const settled = await client.settled(taskId, { timeoutMs: 20_000 });
    expect(settled.map((t) => [t.stage, t.state])).toEqual([
      ['left', TaskState.TASK_STATE_SUCCEEDED],
      ['tail', TaskState.TASK_STATE_SUCCEEDED],
    ]);
    const [branch] = (await mesh.task(taskId)).branches;
    expect(branch).toMatchObject({ stage: expect.stringMatching(/right|tail/) });
    expect(await client.result(branch!.branchId)).toEqual({
      x: 1,
      split: true,
      right: true,
      tail: true,
    });
    expect(await mesh.task(branch!.branchId)).toMatchObject({
      parentTaskId: taskId,
      traceId,
      hops: 3,
      state: TaskState.TASK_STATE_SUCCEEDED,
    });
    expect((await mesh.task(taskId)).branches).toEqual([
      {
        branchId: branch!.branchId,
        stage: 'tail',
        state: TaskState.TASK_STATE_SUCCEEDED,
        attempt: 1,
      },
    ]);
    expect((await history(branch!.branchId)).map((t) => t.reason).slice(0, 2)).toEqual([
      'FANNED_OUT',
      'QUEUED',
    ]);
    expect(ran.sort()).toEqual(['left', 'right', 'split', 'tail']);
  });

  it('cancels the live branches with the task, also after the task itself ended', async () => {
    await mesh.savePipeline(
      pipeline('fan-cancel', [
        { name: 'fork', next: ['quick', 'slow'] },
        { name: 'quick' },
        { name: 'slow' },
      ]),
    );
    let slowAborted = false;
    await work({
      fork: (x) => x,
      quick: (x) => x,
      slow: (_x, ctx) =>
        new Promise((resolve) =>
          ctx.signal.addEventListener('abort', () => {
            slowAborted = true;
            resolve('stopped');
          }),
        ),
    });
    const { taskId } = await client.submit('fan-cancel', { x: 1 });
    expect(await client.result(taskId)).toEqual({ x: 1 });
    const branchId = (await mesh.task(taskId)).branches[0]!.branchId;
    await eventually(
      async () => (await mesh.task(branchId)).state === TaskState.TASK_STATE_RUNNING,
      10_000,
      'the slow branch running',
    );
    const after = await client.cancel(taskId, 'enough');
    expect(after.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(after.branches[0]?.state).toBe(TaskState.TASK_STATE_CANCELLED);
    await eventually(() => slowAborted, 10_000, 'the slow handler aborted');
    await expect(client.cancel(taskId)).rejects.toMatchObject({ code: Status.FAILED_PRECONDITION });
  });

  it('fans out from a PUBLISH stage and from CompleteAsync too', async () => {
    await mesh.savePipeline(
      pipeline('fan-paths', [
        { name: 'start', next: ['spread'] },
        { name: 'spread', next: ['wait', 'p2'], publish: true },
        { name: 'wait', next: ['a1', 'a2'], async: true },
        { name: 'p2' },
        { name: 'a1' },
        { name: 'a2' },
      ]),
    );
    const tokens: string[] = [];
    const ran: string[] = [];
    const step = (name: string) => (x: unknown) => (ran.push(name), x);
    await work({
      start: step('start'),
      wait: (x, ctx) => (tokens.push(ctx.asyncToken), x),
      p2: step('p2'),
      a1: step('a1'),
      a2: step('a2'),
    });
    const { taskId } = await client.submit('fan-paths', { x: 1 });
    await eventually(() => tokens.length === 1, 10_000, 'the ASYNC stage waiting');
    await client.completeAsync(tokens[0]!, { approved: true });
    expect(await client.result(taskId)).toEqual({ approved: true });
    const task = await mesh.task(taskId);
    expect(task.branches.map((b) => b.stage).sort()).toEqual(['a2', 'p2']);
    for (const b of task.branches) {
      expect(await client.result(b.branchId)).toEqual(
        b.stage === 'p2' ? { x: 1 } : { approved: true },
      );
    }
    expect(ran.sort()).toEqual(['a1', 'a2', 'p2', 'start']);
  });
});
