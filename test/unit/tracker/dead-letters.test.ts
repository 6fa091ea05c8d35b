import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { TaskFilter } from '../../../gen/dsat/task/v1/task';
import { createDeadLetters } from '../../../services/tracker/dead-letters';
import { FakeStatusStore } from '../../helpers/fake-status-store';

const S = TaskState;
const filter = (f: Partial<TaskFilter>): TaskFilter => ({
  states: [],
  pipeline: '',
  stage: '',
  actionKey: '',
  ...f,
});

/** Three tasks: d1 and d2 dead-lettered (d2 at another stage), r1 running. */
function setup() {
  const store = new FakeStatusStore();
  for (const [id, stage] of [
    ['d1', 'work'],
    ['d2', 'late'],
    ['r1', 'work'],
  ] as const) {
    store.create(id, 'jobs', 1, stage);
    store.move(id, S.TASK_STATE_DISPATCHED);
    store.move(id, S.TASK_STATE_RUNNING);
  }
  for (const id of ['d1', 'd2']) {
    store.move(id, S.TASK_STATE_RETRY_WAIT);
    store.move(id, S.TASK_STATE_QUEUED, { attempt: 2, reason: 'RETRY' });
    store.move(id, S.TASK_STATE_DISPATCHED);
    store.move(id, S.TASK_STATE_RUNNING);
    store.move(id, S.TASK_STATE_DEAD_LETTERED, {
      reason: 'ATTEMPTS_EXHAUSTED',
      error: { code: 'HANDLER_ERROR', message: 'boom', retryable: true, details: {} },
    });
  }
  const pins: [string, number][] = [];
  let deleted: { ids: readonly string[]; filter: TaskFilter | undefined } | undefined;
  const dl = createDeadLetters({
    tasks: {
      get: async (id) => store.tasks.get(id),
      list: async (f) => ({ tasks: store.list(f), nextPageToken: '' }),
      delete: async (ids, f) => {
        deleted = { ids, filter: f };
        return ids.length;
      },
    },
    sink: { commit: async (writes) => store.commit([...writes]) },
    pin: (id, v) => pins.push([id, v]),
  });
  return { store, dl, pins, deleted: () => deleted };
}

describe('the dead-letter queue', () => {
  it('lists dead-lettered tasks with their last error, by pipeline and stage', async () => {
    const { dl } = setup();
    const all = await dl.list({ pipeline: 'jobs', stage: '', pageSize: 0, pageToken: '' });
    expect(all.tasks.map((t) => t.taskId).sort()).toEqual(['d1', 'd2']);
    expect(all.tasks[0]?.lastError?.code).toBe('HANDLER_ERROR');
    const late = await dl.list({ pipeline: '', stage: 'late', pageSize: 0, pageToken: '' });
    expect(late.tasks.map((t) => t.taskId)).toEqual(['d2']);
  });

  it('redrives by id: DEAD_LETTERED → QUEUED at the stage it died, attempt 1, reason REDRIVE', async () => {
    const { dl, store, pins } = setup();
    expect(await dl.redrive(['d2', 'r1', 'nope'], undefined)).toEqual(['d2']);
    expect(store.history('d2').at(-1)).toMatchObject({
      fromState: S.TASK_STATE_DEAD_LETTERED,
      toState: S.TASK_STATE_QUEUED,
      stage: 'late',
      attempt: 1,
      reason: 'REDRIVE',
    });
    expect(pins).toEqual([['d2', 1]]);
    // The running task was not touched; a second redrive does nothing.
    expect(store.tasks.get('r1')?.state).toBe(S.TASK_STATE_RUNNING);
    expect(await dl.redrive(['d2'], undefined)).toEqual([]);
  });

  it('redrives by filter', async () => {
    const { dl, store } = setup();
    expect(await dl.redrive([], filter({ stage: 'work' }))).toEqual(['d1']);
    expect(store.tasks.get('d1')).toMatchObject({ state: S.TASK_STATE_QUEUED, attempt: 1 });
    expect(store.tasks.get('d2')?.state).toBe(S.TASK_STATE_DEAD_LETTERED);
  });

  it('refuses a redrive that names nothing, or a filter on other states', async () => {
    const { dl } = setup();
    await expect(dl.redrive([], undefined)).rejects.toMatchObject({
      kind: 'INVALID_ARGUMENT',
      field: 'task_ids',
    });
    await expect(dl.redrive([], filter({}))).rejects.toMatchObject({ field: 'task_ids' });
    await expect(dl.redrive([], filter({ states: [S.TASK_STATE_FAILED] }))).rejects.toMatchObject({
      field: 'filter.states[0]',
    });
    await expect(dl.redrive([''], undefined)).rejects.toMatchObject({ field: 'task_ids[0]' });
  });

  it('purges terminal tasks only, and refuses an empty request', async () => {
    const { dl, deleted } = setup();
    await expect(dl.purge([], undefined)).rejects.toMatchObject({
      kind: 'INVALID_ARGUMENT',
      reason: 'EMPTY_PURGE',
      field: 'filter',
    });
    await expect(dl.purge([], filter({}))).rejects.toMatchObject({ reason: 'EMPTY_PURGE' });
    await expect(dl.purge([], filter({ states: [S.TASK_STATE_RUNNING] }))).rejects.toMatchObject({
      field: 'filter.states[0]',
    });
    expect(await dl.purge(['d1'], undefined)).toBe(1);
    expect(deleted()).toEqual({ ids: ['d1'], filter: undefined });
    await dl.purge([], filter({ pipeline: 'jobs' }));
    expect(deleted()?.filter?.states).toEqual([
      S.TASK_STATE_SUCCEEDED,
      S.TASK_STATE_FAILED,
      S.TASK_STATE_DEAD_LETTERED,
      S.TASK_STATE_CANCELLED,
    ]);
  });
});
