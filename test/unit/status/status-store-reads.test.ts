import { afterEach, describe, expect, it } from '@jest/globals';
import { Decorator, Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import type { Task, TaskFilter } from '../../../gen/dsat/task/v1/task';
import type { StatusStore } from '../../../services/status/status-store';
import {
  S,
  cleanDirs,
  closeStores,
  createTask,
  createWrite,
  move,
  open,
  reopen,
} from './store-harness';

afterEach(async () => {
  await closeStores();
  cleanDirs();
});

const HOUR = 3_600_000;

function filter(fields: Partial<TaskFilter>): TaskFilter {
  return { states: [], pipeline: '', stage: '', actionKey: '', ...fields };
}

async function listAll(store: StatusStore, f: TaskFilter, pageSize: number): Promise<Task[]> {
  const out: Task[] = [];
  let token = '';
  for (let pages = 0; pages < 1000; pages++) {
    const page = await store.listTasks(f, pageSize, token);
    expect(page.tasks.length).toBeLessThanOrEqual(pageSize);
    out.push(...page.tasks);
    if (page.nextPageToken === '') return out;
    token = page.nextPageToken;
  }
  throw new Error('too many pages');
}

/** a0..a4 live in demo, b0..b3 cancelled in demo, c0..c2 succeeded in other. */
async function mixed(store: StatusStore): Promise<void> {
  for (let i = 0; i < 5; i++) await createTask(store, `a${i}`);
  await move(store, 'a1', S.TASK_STATE_DISPATCHED);
  await move(store, 'a1', S.TASK_STATE_RUNNING);
  for (let i = 0; i < 4; i++) {
    await createTask(store, `b${i}`);
    await move(store, `b${i}`, S.TASK_STATE_CANCELLED);
  }
  for (let i = 0; i < 3; i++) {
    await createTask(store, `c${i}`, { pipeline: 'other' });
    await move(store, `c${i}`, S.TASK_STATE_DISPATCHED);
    await move(store, `c${i}`, S.TASK_STATE_RUNNING);
    await move(store, `c${i}`, S.TASK_STATE_QUEUED, { stage: 's2' });
    await move(store, `c${i}`, S.TASK_STATE_DISPATCHED);
    await move(store, `c${i}`, S.TASK_STATE_RUNNING);
    await move(store, `c${i}`, S.TASK_STATE_SUCCEEDED);
  }
}

describe('listTasks', () => {
  it('lists live tasks newest first, then ended ones most recent first, across pages', async () => {
    const store = await open();
    await mixed(store);
    for (const size of [1, 2, 5, 100]) {
      const ids = (await listAll(store, filter({}), size)).map((t) => t.taskId);
      expect(ids).toEqual(['a4', 'a3', 'a2', 'a1', 'a0', 'c2', 'c1', 'c0', 'b3', 'b2', 'b1', 'b0']);
    }
  });

  it('filters by state, pipeline, stage and action key', async () => {
    const store = await open();
    await mixed(store);
    const ids = async (f: Partial<TaskFilter>) =>
      (await listAll(store, filter(f), 3)).map((t) => t.taskId).sort();
    expect(await ids({ states: [S.TASK_STATE_RUNNING] })).toEqual(['a1']);
    expect(await ids({ states: [S.TASK_STATE_CANCELLED, S.TASK_STATE_SUCCEEDED] })).toEqual([
      'b0',
      'b1',
      'b2',
      'b3',
      'c0',
      'c1',
      'c2',
    ]);
    expect(await ids({ pipeline: 'other' })).toEqual(['c0', 'c1', 'c2']);
    expect(await ids({ stage: 's2' })).toEqual(['c0', 'c1', 'c2']);
    expect(await ids({ actionKey: '*?oth*@NONE?*' })).toEqual(['c0', 'c1', 'c2']);
    expect(await ids({ pipeline: 'demo', states: [S.TASK_STATE_QUEUED] })).toEqual([
      'a0',
      'a2',
      'a3',
      'a4',
    ]);
  });

  it('survives a restart (ended tasks come from the index) and refuses a foreign page token', async () => {
    let store = await open();
    await mixed(store);
    store = await reopen(store);
    expect(
      (await listAll(store, filter({ states: [S.TASK_STATE_CANCELLED] }), 2)).map((t) => t.taskId),
    ).toEqual(['b3', 'b2', 'b1', 'b0']);
    await expect(store.listTasks(undefined, 10, 'bm9wZQ')).rejects.toMatchObject({
      field: 'page_token',
      reason: 'INVALID_PAGE_TOKEN',
    });
  });
});

describe('listUnfinished and getHistory', () => {
  it('pages unfinished tasks oldest first, by stage, with the revision it read at', async () => {
    let store = await open();
    for (let i = 0; i < 7; i++) await createTask(store, `u${i}`);
    await move(store, 'u2', S.TASK_STATE_CANCELLED);
    await move(store, 'u5', S.TASK_STATE_DISPATCHED);
    await move(store, 'u5', S.TASK_STATE_RUNNING);
    await move(store, 'u5', S.TASK_STATE_QUEUED, { stage: 's2' });
    store = await reopen(store);
    const ids: string[] = [];
    let token = '';
    do {
      const page = store.listUnfinished([], 2, token);
      expect(page.revision).toBe(store.stats().revision);
      ids.push(...page.tasks.map((t) => t.taskId));
      token = page.nextPageToken;
    } while (token !== '');
    expect(ids).toEqual(['u0', 'u1', 'u3', 'u4', 'u5', 'u6']);
    expect(store.listUnfinished(['s2']).tasks.map((t) => t.taskId)).toEqual(['u5']);
  });

  it('pages a history in seq order', async () => {
    const store = await open();
    await createTask(store, 'a');
    for (let i = 0; i < 5; i++) {
      await move(store, 'a', S.TASK_STATE_DISPATCHED);
      await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'WORKER_LOST' });
    }
    const seqs: number[] = [];
    let token = '';
    do {
      const page = await store.getHistory('a', 3, token);
      seqs.push(...page.transitions.map((t) => t.seq));
      token = page.nextPageToken;
    } while (token !== '');
    expect(seqs).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect((await store.getTask('a')).attempt).toBe(6);
  });
});

describe('pages under the byte budget', () => {
  const KiB = 1024;
  // A 1 MiB budget holds six tasks with 150 KiB inputs.
  const input = (id: string) => ({ data: Buffer.alloc(150 * KiB, id), contentType: 'text/plain' });

  /** l0..l6 live, e0..e4 ended: the first page is cut among the live, the next spans both. */
  async function bigTasks(): Promise<StatusStore> {
    const store = await open({ maxReplyBytes: 1024 * KiB });
    for (let i = 0; i < 5; i++) {
      await createTask(store, `e${i}`, { payload: input(`e${i}`) });
      await move(store, `e${i}`, S.TASK_STATE_CANCELLED);
    }
    for (let i = 0; i < 7; i++) await createTask(store, `l${i}`, { payload: input(`l${i}`) });
    return store;
  }

  it('cuts ListTasks pages by bytes, across live and ended tasks, missing nothing', async () => {
    const store = await bigTasks();
    const expected = ['l6', 'l5', 'l4', 'l3', 'l2', 'l1', 'l0', 'e4', 'e3', 'e2', 'e1', 'e0'];
    for (const size of [1, 2, 5, 7, 100]) {
      const tasks = await listAll(store, filter({}), size);
      expect(tasks.map((t) => t.taskId)).toEqual(expected);
      for (const t of tasks)
        expect(Buffer.from(input(t.taskId).data).equals(t.input!.data)).toBe(true);
    }
    const first = await store.listTasks(undefined, 100);
    expect(first.tasks.map((t) => t.taskId)).toEqual(expected.slice(0, 6));
    const second = await store.listTasks(undefined, 100, first.nextPageToken);
    expect(second.tasks.map((t) => t.taskId)).toEqual(expected.slice(6, 12));
    expect(second.nextPageToken).toBe('');
  });

  it('cuts ListUnfinishedTasks and GetTaskHistory pages by bytes, always one item at least', async () => {
    const store = await bigTasks();
    const ids: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = store.listUnfinished([], 0, token);
      expect(page.tasks.length).toBeGreaterThan(0);
      ids.push(...page.tasks.map((t) => t.taskId));
      token = page.nextPageToken;
      pages++;
    } while (token !== '');
    expect(ids).toEqual(['l0', 'l1', 'l2', 'l3', 'l4', 'l5', 'l6']);
    expect(pages).toBe(2);

    // Each move of a PUBLISH stage publishes the 384 KiB input: four of them pass 1 MiB.
    await createTask(store, 'p', { payload: { data: Buffer.alloc(384 * KiB), contentType: '' } });
    for (const stage of ['s2', 's3', 's4']) await move(store, 'p', S.TASK_STATE_QUEUED, { stage });
    await move(store, 'p', S.TASK_STATE_SUCCEEDED);
    const seqs: number[][] = [];
    token = '';
    do {
      const page = await store.getHistory('p', 0, token);
      seqs.push(page.transitions.map((t) => t.seq));
      token = page.nextPageToken;
    } while (token !== '');
    expect(seqs).toEqual([
      [1, 2, 3, 4],
      [5, 6],
    ]);
  });

  it('sends a task larger than the budget alone, when the budget shrank after it was stored', async () => {
    let store = await open();
    const big = { data: Buffer.alloc(1024 * KiB), contentType: '' };
    await createTask(store, 'a', { payload: big });
    await createTask(store, 'b', { payload: big });
    store = await reopen(store, { maxReplyBytes: 512 * KiB });
    const first = await store.listTasks(undefined, 100);
    expect(first.tasks.map((t) => t.taskId)).toEqual(['b']);
    const second = await store.listTasks(undefined, 100, first.nextPageToken);
    expect(second).toMatchObject({ tasks: [{ taskId: 'a' }], nextPageToken: '' });
    const unfinished = store.listUnfinished([], 0);
    expect(unfinished.tasks.map((t) => t.taskId)).toEqual(['a']);
    expect(unfinished.nextPageToken).not.toBe('');
    // And no new one that large is accepted: 128 KiB is the largest payload under this budget.
    const [refused] = await store.submit([
      createWrite('c', { payload: { data: Buffer.alloc(128 * KiB + 1), contentType: '' } }),
    ]);
    expect(refused).toMatchObject({ code: 8, reason: 'PAYLOAD_TOO_LARGE' });
  });
});

describe('deleteTasks', () => {
  it('deletes ended tasks by id and by filter, leaving live ones, and frees their idempotency keys', async () => {
    const store = await open();
    await createTask(store, 'live', { idempotencyKey: 'k-live' });
    await createTask(store, 'done', { idempotencyKey: 'k-done' });
    await move(store, 'done', S.TASK_STATE_CANCELLED);
    await mixed(store);
    expect(await store.deleteTasks(['live', 'done', 'missing'])).toBe(1);
    await expect(store.getTask('done')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    expect((await store.getTask('live')).state).toBe(S.TASK_STATE_QUEUED);
    const [fresh] = await store.submit([createWrite('again', { idempotencyKey: 'k-done' })]);
    expect(fresh).toMatchObject({ taskId: 'again', duplicate: false });
    expect(await store.deleteTasks([], filter({ pipeline: 'other' }))).toBe(3);
    const left = (await listAll(store, filter({}), 50)).map((t) => t.taskId).sort();
    expect(left).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'again', 'b0', 'b1', 'b2', 'b3', 'live']);
    await expect(store.deleteTasks(['bad id'])).rejects.toMatchObject({ field: 'task_ids[0]' });
  });
  it('deletes by a filter whose matches lie beyond the first chunk of the index', async () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const store = await open({ now: () => now });
    const bulk = Array.from({ length: 2100 }, (_, i) => `bulk-${i}`);
    await Promise.all(
      bulk.map(async (id) => {
        await createTask(store, id, { pipeline: 'bulk' });
        await move(store, id, S.TASK_STATE_CANCELLED);
      }),
    );
    now += 1000;
    for (const id of ['rare-1', 'rare-2']) {
      await createTask(store, id, { pipeline: 'rare' });
      await move(store, id, S.TASK_STATE_CANCELLED);
    }
    expect(await store.deleteTasks([], filter({ pipeline: 'rare' }))).toBe(2);
    await expect(store.getTask('rare-1')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    expect((await store.getTask('bulk-7')).state).toBe(S.TASK_STATE_CANCELLED);
  }, 30_000);
});

describe('pipelines', () => {
  const demo = Pipeline.fromPartial({
    name: 'demo',
    stages: [
      { name: 'a', next: ['b'] },
      { name: 'b', decorators: [Decorator.DECORATOR_ASYNC] },
    ],
  });

  it('stores versions, skips unchanged ones, and reads them back after a restart', async () => {
    let store = await open({ pipelines: [] });
    const v1 = await store.savePipeline(demo);
    expect(v1).toMatchObject({ changed: true, pipeline: { version: 1, name: 'demo' } });
    expect(await store.savePipeline(demo)).toMatchObject({
      changed: false,
      pipeline: { version: 1 },
    });
    const v2 = await store.savePipeline({ ...demo, description: 'second' });
    expect(v2.pipeline?.version).toBe(2);
    await store.savePipeline(Pipeline.fromPartial({ name: 'alpha', stages: [{ name: 'x' }] }));
    store = await reopen(store);
    expect(store.getPipeline('demo')).toMatchObject({ version: 2, description: 'second' });
    expect(store.getPipeline('demo', 1).description).toBe('');
    expect(() => store.getPipeline('demo', 3)).toThrow(
      expect.objectContaining({ reason: 'PIPELINE_NOT_FOUND' }),
    );
    const first = store.listPipelines(1);
    expect(first.pipelines.map((p) => p.name)).toEqual(['alpha']);
    const second = store.listPipelines(1, first.nextPageToken);
    expect(second).toMatchObject({ pipelines: [{ name: 'demo', version: 2 }], nextPageToken: '' });
    await expect(store.savePipeline({ ...demo, name: 'Bad Name' })).rejects.toMatchObject({
      field: 'pipeline.name',
    });
  });
});

describe('retention and the feed window', () => {
  it('deletes tasks ended longer ago than the retention, and only those', async () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const store = await open({ now: () => now, retentionMs: 24 * HOUR });
    await createTask(store, 'old', { idempotencyKey: 'k-old' });
    await move(store, 'old', S.TASK_STATE_CANCELLED);
    now += 20 * HOUR;
    await createTask(store, 'recent');
    await move(store, 'recent', S.TASK_STATE_CANCELLED);
    await createTask(store, 'live');
    now += 5 * HOUR;
    const report = await store.sweep();
    expect(report.tasksDeleted).toBe(1);
    await expect(store.getTask('old')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    expect((await store.getTask('recent')).state).toBe(S.TASK_STATE_CANCELLED);
    expect((await store.getTask('live')).state).toBe(S.TASK_STATE_QUEUED);
  });

  it('checkpoints a live task before sweeping the segments its log needs, so a restart rebuilds it', async () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    let store = await open({ now: () => now, feedWindowMs: HOUR });
    await createTask(store, 'slow');
    await move(store, 'slow', S.TASK_STATE_DISPATCHED, { workerId: 'w1' });
    await move(store, 'slow', S.TASK_STATE_RUNNING);
    now += 2 * HOUR;
    await createTask(store, 'fresh');
    const history = (await store.getHistory('slow')).transitions;
    const report = await store.sweep();
    expect(report).toMatchObject({ segmentsDeleted: 3, recordsCheckpointed: 1 });
    expect(store.stats().feedStartRevision).toBe(5);
    await move(store, 'slow', S.TASK_STATE_RUNNING, {
      progress: { fraction: 0.9, message: 'nearly', details: Buffer.alloc(0) },
    });
    store = await reopen(store, { now: () => now, feedWindowMs: HOUR });
    const rebuilt = (await store.getHistory('slow')).transitions;
    expect(rebuilt.slice(0, history.length)).toEqual(history);
    expect(rebuilt).toHaveLength(history.length + 1);
    expect((await store.getTask('slow')).progress?.message).toBe('nearly');
  });
});
