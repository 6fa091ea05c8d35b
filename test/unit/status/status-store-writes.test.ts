import { afterEach, describe, expect, it } from '@jest/globals';
import type { TransitionWrite } from '../../../gen/dsat/status/v1/status';
import type { TaskState } from '../../../gen/dsat/task/v1/task';
import type { StatusStore } from '../../../services/status/status-store';
import { SYNC_READ_MAX, TASK_MEMORY_OVERHEAD } from '../../../services/status/status-store';
import {
  ALL_TASK_STATES,
  stateName,
  transitionRule,
} from '../../../services/status/task-state-machine';
import {
  S,
  cleanDirs,
  closeStores,
  createTask,
  createWrite,
  foldHistory,
  foldable,
  move,
  open,
  reopen,
  testPipeline,
  write,
} from './store-harness';

afterEach(async () => {
  await closeStores();
  cleanDirs();
});

/** How to bring a fresh task to each state a task can rest in. */
const PATHS: Record<number, [TaskState, Partial<TransitionWrite>][]> = {
  [S.TASK_STATE_QUEUED]: [],
  [S.TASK_STATE_DISPATCHED]: [[S.TASK_STATE_DISPATCHED, { workerId: 'w1' }]],
  [S.TASK_STATE_RUNNING]: [
    [S.TASK_STATE_DISPATCHED, { workerId: 'w1' }],
    [S.TASK_STATE_RUNNING, {}],
  ],
  [S.TASK_STATE_RETRY_WAIT]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [
      S.TASK_STATE_RETRY_WAIT,
      { error: { code: 'BOOM', message: 'boom', retryable: true, details: {} } },
    ],
  ],
  [S.TASK_STATE_WAITING]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [S.TASK_STATE_WAITING, { asyncToken: 'tok-1' }],
  ],
  [S.TASK_STATE_TIMED_OUT]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [S.TASK_STATE_TIMED_OUT, { reason: 'RUN_TIMEOUT' }],
  ],
  [S.TASK_STATE_SUCCEEDED]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [S.TASK_STATE_SUCCEEDED, {}],
  ],
  [S.TASK_STATE_FAILED]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [S.TASK_STATE_FAILED, {}],
  ],
  [S.TASK_STATE_DEAD_LETTERED]: [
    [S.TASK_STATE_DISPATCHED, {}],
    [S.TASK_STATE_RUNNING, {}],
    [S.TASK_STATE_DEAD_LETTERED, {}],
  ],
  [S.TASK_STATE_CANCELLED]: [[S.TASK_STATE_CANCELLED, {}]],
};

async function taskIn(store: StatusStore, taskId: string, state: TaskState): Promise<void> {
  await createTask(store, taskId);
  for (const [to, fields] of PATHS[state] ?? []) await move(store, taskId, to, fields);
}

/** The fields a legal write of this edge needs, chosen from its first move. */
function fieldsFor(from: TaskState, to: TaskState): Partial<TransitionWrite> {
  const move = transitionRule(from, to)?.moves[0];
  const payload = { data: Buffer.from(`to ${stateName(to)}`), contentType: 'text/plain' };
  if (move === 'advance') return { stage: 's2', payload };
  if (move === 'retry') return { reason: 'WORKER_LOST' };
  if (move === 'finish') return { payload };
  if (to === S.TASK_STATE_WAITING) return { asyncToken: 'tok-2' };
  if (from === S.TASK_STATE_RUNNING && to === S.TASK_STATE_RUNNING) {
    return { progress: { fraction: 0.5, message: 'half', details: Buffer.from('p') } };
  }
  return {};
}

const RESTING = Object.keys(PATHS).map(Number) as TaskState[];
const CASES = RESTING.flatMap((from) =>
  ALL_TASK_STATES.map((to) => [stateName(from), stateName(to), from, to] as const),
);

describe('every pair of states through the store', () => {
  it('applies each legal transition and refuses each illegal one, changing nothing', async () => {
    const store = await open();
    for (const [, , from] of CASES) void from;
    for (const [fromName, toName, from, to] of CASES) {
      const id = `pair-${fromName}-${toName}`;
      await taskIn(store, id, from);
      const before = await store.getTask(id);
      const historyBefore = (await store.getHistory(id)).transitions;
      const statsBefore = store.stats();
      const [outcome] = await store.submit([
        write({
          taskId: id,
          expectedState: from,
          expectedAttempt: before.attempt,
          toState: to,
          ...fieldsFor(from, to),
        }),
      ]);
      const after = await store.getTask(id);
      const legal = transitionRule(from, to) !== undefined;
      const label = `${fromName} → ${toName}`;
      if (legal) {
        expect({ label, code: outcome?.code, message: outcome?.message }).toEqual({
          label,
          code: 0,
          message: '',
        });
        expect(after.state).toBe(to);
        expect(after.seq).toBe(before.seq + 1);
        expect(outcome?.seq).toBe(after.seq);
        expect(outcome?.revision).toBe(after.revision);
        expect((await store.getHistory(id)).transitions).toHaveLength(historyBefore.length + 1);
      } else {
        const expected =
          to === S.TASK_STATE_UNSPECIFIED
            ? { code: 3, reason: 'INVALID_FIELD' }
            : { code: 9, reason: 'ILLEGAL_TRANSITION' };
        expect({ label, code: outcome?.code, reason: outcome?.reason }).toEqual({
          label,
          ...expected,
        });
        expect(after).toEqual(before);
        expect((await store.getHistory(id)).transitions).toEqual(historyBefore);
        expect(store.stats().revision).toBe(statsBefore.revision);
        expect(store.stats().transitions).toBe(statsBefore.transitions);
        if (expected.code === 9)
          expect(store.stats().illegalRefused).toBe(statsBefore.illegalRefused + 1);
      }
      expect(foldable(after)).toEqual(foldHistory((await store.getHistory(id)).transitions));
    }
    expect(CASES).toHaveLength(RESTING.length * 12);
  });
});

describe('compare-and-set', () => {
  it('refuses a write naming an older attempt as STALE_ATTEMPT and counts it', async () => {
    const store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'WORKER_LOST' }); // attempt 2
    await move(store, 'a', S.TASK_STATE_DISPATCHED, { workerId: 'w2' });
    await move(store, 'a', S.TASK_STATE_RUNNING);
    const before = await store.getTask('a');
    expect(before.attempt).toBe(2);
    const [late] = await store.submit([
      write({
        taskId: 'a',
        expectedState: S.TASK_STATE_RUNNING,
        expectedAttempt: 1,
        toState: S.TASK_STATE_SUCCEEDED,
      }),
    ]);
    expect(late).toMatchObject({
      code: 9,
      reason: 'STALE_ATTEMPT',
      revision: before.revision,
      seq: before.seq,
    });
    expect(await store.getTask('a')).toEqual(before);
    expect(store.stats().staleRefused).toBe(1);
  });

  it('refuses a write expecting another state as STATE_MISMATCH', async () => {
    const store = await open();
    await createTask(store, 'a');
    const before = await store.getTask('a');
    const [outcome] = await store.submit([
      write({ taskId: 'a', expectedState: S.TASK_STATE_DISPATCHED, toState: S.TASK_STATE_RUNNING }),
    ]);
    expect(outcome).toMatchObject({ code: 9, reason: 'STATE_MISMATCH' });
    expect(outcome?.message).toContain('is QUEUED');
    expect(await store.getTask('a')).toEqual(before);
  });

  it('answers an unknown task with TASK_NOT_FOUND (5)', async () => {
    const store = await open();
    const [outcome] = await store.submit([
      write({
        taskId: 'nope',
        expectedState: S.TASK_STATE_QUEUED,
        toState: S.TASK_STATE_DISPATCHED,
      }),
    ]);
    expect(outcome).toMatchObject({ code: 5, reason: 'TASK_NOT_FOUND', taskId: 'nope' });
    expect(store.stats().revision).toBe(0);
  });

  it('refuses a second create of an existing task id as TASK_EXISTS', async () => {
    const store = await open();
    await createTask(store, 'a');
    const [outcome] = await store.submit([createWrite('a')]);
    expect(outcome).toMatchObject({ code: 9, reason: 'TASK_EXISTS' });
    expect(store.stats().tasksCreated).toBe(1);
  });
});

describe('attempts and stages follow the move', () => {
  it('resets the attempt and changes input and hops when a stage is done', async () => {
    const store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'WORKER_LOST' });
    expect(await store.getTask('a')).toMatchObject({ attempt: 2, stage: 's1', hops: 0 });
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    const output = { data: Buffer.from('stage 1 output'), contentType: 'text/plain' };
    await move(store, 'a', S.TASK_STATE_QUEUED, { stage: 's2', payload: output });
    expect(await store.getTask('a')).toMatchObject({
      attempt: 1,
      stage: 's2',
      hops: 1,
      input: output,
      state: S.TASK_STATE_QUEUED,
    });
  });

  it('fans out: the task goes on to its stage and each further stage starts a branch task in the same commit', async () => {
    let store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    const output = { data: Buffer.from('to every branch'), contentType: 'text/plain' };
    const commitsBefore = store.stats().commits;
    const o = await move(store, 'a', S.TASK_STATE_QUEUED, {
      stage: 's2',
      payload: output,
      fanOutStages: ['s3', 's4'],
    });
    expect(o.code).toBe(0);
    expect(store.stats().commits).toBe(commitsBefore + 1);
    const parent = await store.getTask('a');
    expect(parent).toMatchObject({
      stage: 's2',
      state: S.TASK_STATE_QUEUED,
      hops: 1,
      input: output,
    });
    const ids = parent.branches.map((b) => b.branchId);
    expect(ids).toEqual([`a.${o.seq}.s3`, `a.${o.seq}.s4`]);
    for (const [i, stage] of ['s3', 's4'].entries()) {
      expect(await store.getTask(ids[i] as string)).toMatchObject({
        stage,
        state: S.TASK_STATE_QUEUED,
        attempt: 1,
        hops: 1,
        input: output,
        pipeline: parent.pipeline,
        traceparent: parent.traceparent,
        parentTaskId: 'a',
      });
    }
    expect(store.listUnfinished(['s3']).tasks.map((t) => t.taskId)).toEqual([ids[0]]);
    const started = (await store.getHistory(ids[0] as string)).transitions;
    expect(started.map((t) => [t.reason, t.parentTaskId, t.transitionId])).toEqual([
      ['FANNED_OUT', 'a', started[0]?.transitionId],
      ['QUEUED', 'a', started[0]?.transitionId],
    ]);
    // The branch moves on its own; the task reports where each branch is now.
    await move(store, ids[0] as string, S.TASK_STATE_CANCELLED, { reason: 'CANCEL_REQUESTED' });
    expect((await store.getTask('a')).branches).toEqual([
      { branchId: ids[0], stage: 's3', state: S.TASK_STATE_CANCELLED, attempt: 1 },
      { branchId: ids[1], stage: 's4', state: S.TASK_STATE_QUEUED, attempt: 1 },
    ]);
    const watch = store.watchTask('a', 0);
    const first = await watch.next();
    await watch.return(undefined);
    expect(first.value?.event).toMatchObject({
      $case: 'snapshot',
      value: { branches: [{ state: S.TASK_STATE_CANCELLED }, { state: S.TASK_STATE_QUEUED }] },
    });
    store = await reopen(store);
    expect((await store.getTask('a')).branches.map((b) => b.state)).toEqual([
      S.TASK_STATE_CANCELLED,
      S.TASK_STATE_QUEUED,
    ]);
    expect(await store.getTask(ids[1] as string)).toMatchObject({
      parentTaskId: 'a',
      input: output,
    });
  });

  it('starts the branches once when the fan-out write is repeated', async () => {
    const store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    const fanOut = write({
      taskId: 'a',
      expectedState: S.TASK_STATE_RUNNING,
      toState: S.TASK_STATE_QUEUED,
      stage: 's2',
      fanOutStages: ['s3'],
    });
    const [first] = await store.submit([fanOut]);
    const [again] = await store.submit([fanOut]);
    expect(first?.code).toBe(0);
    expect(again).toMatchObject({ code: 0, duplicate: true });
    expect((await store.getTask('a')).branches).toHaveLength(1);
    expect(store.stats().tasksCreated).toBe(2);
  });

  it.each<[string, Partial<TransitionWrite>]>([
    ['a stage named twice', { stage: 's2', fanOutStages: ['s3', 's3'] }],
    ['the next stage again', { stage: 's2', fanOutStages: ['s2'] }],
    ['a retry at the same stage', { reason: 'WORKER_LOST', fanOutStages: ['s3'] }],
  ])('refuses a fan-out with %s, naming fan_out_stages and starting nothing', async (_, fields) => {
    const store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    const before = await store.getTask('a');
    const [o] = await store.submit([
      write({
        taskId: 'a',
        expectedState: S.TASK_STATE_RUNNING,
        toState: S.TASK_STATE_QUEUED,
        ...fields,
      }),
    ]);
    expect(o?.code).toBe(3);
    expect(o?.message.startsWith('fan_out_stages:')).toBe(true);
    expect(await store.getTask('a')).toEqual(before);
    expect(store.stats().tasksCreated).toBe(1);
  });

  it('redrives a dead letter at its stage with attempt 1', async () => {
    const store = await open();
    await taskIn(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'WORKER_LOST' });
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_DEAD_LETTERED, {
      error: { code: 'BOOM', message: 'x', retryable: true, details: {} },
    });
    expect(store.stats().unfinishedTasks).toBe(0);
    await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'REDRIVE' });
    expect(await store.getTask('a')).toMatchObject({
      attempt: 1,
      stage: 's1',
      state: S.TASK_STATE_QUEUED,
    });
    expect(store.stats().unfinishedTasks).toBe(1);
    expect(store.listUnfinished().tasks.map((t) => t.taskId)).toEqual(['a']);
  });

  it.each<[string, Partial<TransitionWrite>, TaskState, TaskState, string]>([
    ['a requeue without a reason', {}, S.TASK_STATE_RUNNING, S.TASK_STATE_QUEUED, 'reason'],
    [
      'a wrong attempt',
      { attempt: 3, reason: 'WORKER_LOST' },
      S.TASK_STATE_RUNNING,
      S.TASK_STATE_QUEUED,
      'attempt',
    ],
    [
      'a stage on a move that stays',
      { stage: 's9' },
      S.TASK_STATE_QUEUED,
      S.TASK_STATE_DISPATCHED,
      'stage',
    ],
    ['no next stage for a PUBLISH move', {}, S.TASK_STATE_QUEUED, S.TASK_STATE_QUEUED, 'stage'],
    ['WAITING without a token', {}, S.TASK_STATE_RUNNING, S.TASK_STATE_WAITING, 'async_token'],
    ['a checkpoint without progress', {}, S.TASK_STATE_RUNNING, S.TASK_STATE_RUNNING, 'progress'],
  ])('refuses %s as INVALID_ARGUMENT naming the field', async (_, fields, from, to, field) => {
    const store = await open();
    await taskIn(store, 'a', from);
    const before = await store.getTask('a');
    const [outcome] = await store.submit([
      write({
        taskId: 'a',
        expectedState: from,
        expectedAttempt: before.attempt,
        toState: to,
        ...fields,
      }),
    ]);
    expect(outcome?.code).toBe(3);
    expect(outcome?.message.startsWith(`${field}:`)).toBe(true);
    expect(await store.getTask('a')).toEqual(before);
    expect(store.stats().invalidRefused).toBe(1);
  });
});

describe('malformed writes', () => {
  it.each<[string, Partial<TransitionWrite>]>([
    ['transition_id', { transitionId: '' }],
    ['task_id', { taskId: 'has space' }],
    ['to_state', { toState: 99 as TaskState }],
    ['expected_state', { expectedState: 42 as TaskState }],
    ['stage', { stage: 'Upper' }],
    ['reason', { reason: 'lower case' }],
    ['fan_out_stages', { fanOutStages: ['b'] }],
    ['fan_out_stages', { toState: S.TASK_STATE_CANCELLED, fanOutStages: ['Not A Stage'] }],
    ['expected_state', { expectedState: S.TASK_STATE_UNSPECIFIED }],
    ['progress.fraction', { progress: { fraction: NaN, message: '', details: Buffer.alloc(0) } }],
    ['progress.fraction', { progress: { fraction: -0.5, message: '', details: Buffer.alloc(0) } }],
    [
      'progress.message',
      { progress: { fraction: 0, message: 'm'.repeat(1025), details: Buffer.alloc(0) } },
    ],
    [
      'progress.details',
      { progress: { fraction: 0, message: '', details: Buffer.alloc(64 * 1024 + 1) } },
    ],
    ['error.code', { error: { code: 'C'.repeat(129), message: '', retryable: true, details: {} } }],
    ['error.code', { error: { code: 'A\u0000B', message: '', retryable: true, details: {} } }],
    [
      'error.message',
      { error: { code: 'E', message: 'm'.repeat(4097), retryable: true, details: {} } },
    ],
    [
      'error.details',
      { error: { code: 'E', message: '', retryable: true, details: { k: 'v'.repeat(64 * 1024) } } },
    ],
    [
      'error.details', // many small entries count their framing too
      {
        error: {
          code: 'E',
          message: '',
          retryable: true,
          details: Object.fromEntries(Array.from({ length: 8000 }, (_, i) => [`${i}`, ''])),
        },
      },
    ],
    ['payload.content_type', { payload: { data: Buffer.alloc(0), contentType: 't'.repeat(257) } }],
  ])('refuses a bad %s with code 3, writing nothing', async (field, fields) => {
    const store = await open();
    await createTask(store, 'a');
    const [outcome] = await store.submit([
      write({
        taskId: 'a',
        expectedState: S.TASK_STATE_QUEUED,
        toState: S.TASK_STATE_DISPATCHED,
        ...fields,
      }),
    ]);
    expect(outcome?.code).toBe(3);
    expect(outcome?.message.startsWith(`${field}:`)).toBe(true);
    expect(store.stats().transitions).toBe(2);
  });

  it.each<[string, Parameters<typeof createWrite>[1]]>([
    ['stage', { stage: '' }],
    ['to_state', { toState: S.TASK_STATE_DISPATCHED }],
    ['create.pipeline', { pipeline: 'Bad Name' }],
    ['attempt', { attempt: 2 }],
    ['create.idempotency_key', { idempotencyKey: 'half \ud800 a pair' }],
    [
      'create.traceparent',
      {
        create: {
          pipeline: 'demo',
          pipelineVersion: 1,
          idempotencyKey: '',
          priority: 0,
          traceparent: 'nope',
        },
      },
    ],
  ])('refuses a create with a bad %s', async (field, fields) => {
    const store = await open();
    const [outcome] = await store.submit([createWrite('a', fields)]);
    expect(outcome?.code).toBe(3);
    expect(outcome?.message.startsWith(`${field}:`)).toBe(true);
    await expect(store.getTask('a')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
  });

  it.each<[string, number, Parameters<typeof createWrite>[1]]>([
    ['create.pipeline', 5, { pipeline: 'no-such-pipeline' }],
    [
      'create.pipeline_version',
      5,
      {
        create: {
          pipeline: 'demo',
          pipelineVersion: 77,
          idempotencyKey: '',
          priority: 0,
          traceparent: '',
        },
      },
    ],
    ['stage', 3, { stage: 'ghost' }],
  ])('refuses a create nobody could run: %s (code %d)', async (field, code, fields) => {
    const store = await open();
    const [outcome] = await store.submit([createWrite('a', fields), createWrite('b')]);
    expect(outcome).toMatchObject({ code, taskId: 'a' });
    expect(outcome?.message.startsWith(`${field}:`)).toBe(true);
    await expect(store.getTask('a')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    expect(store.listUnfinished().tasks.map((t) => t.taskId)).toEqual(['b']);
  });

  it('creates in a pipeline saved after the store opened, at the version it pins', async () => {
    const store = await open({ pipelines: [] });
    expect((await store.submit([createWrite('a')]))[0]?.code).toBe(5);
    await store.savePipeline(testPipeline('demo'));
    await store.savePipeline({
      ...testPipeline('demo'),
      stages: [{ ...testPipeline('demo').stages[3]! }],
    });
    expect((await store.submit([createWrite('a')]))[0]?.code).toBe(0); // s1 is in version 1
    const v2 = {
      pipeline: 'demo',
      pipelineVersion: 2,
      idempotencyKey: '',
      priority: 0,
      traceparent: '',
    };
    expect((await store.submit([createWrite('b', { create: v2 })]))[0]?.code).toBe(3); // not in 2
    expect((await store.submit([createWrite('c', { create: v2, stage: 's4' })]))[0]?.code).toBe(0);
  });
});

describe('duplicates', () => {
  it('answers a repeated transition_id OK with duplicate=true and writes nothing', async () => {
    const store = await open();
    await createTask(store, 'a');
    const w = write({
      taskId: 'a',
      expectedState: S.TASK_STATE_QUEUED,
      toState: S.TASK_STATE_DISPATCHED,
      workerId: 'w1',
    });
    const [first] = await store.submit([w]);
    const stats = store.stats();
    const [again] = await store.submit([w]);
    expect(again).toEqual({ ...first, duplicate: true });
    expect(store.stats()).toMatchObject({
      revision: stats.revision,
      transitions: stats.transitions,
      duplicates: 1,
    });
    // Later writes do not make an old id forgotten, nor does a restart or the end of the task.
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_SUCCEEDED);
    const reopened = await reopen(store);
    const [late] = await reopened.submit([w]);
    expect(late).toEqual({ ...first, duplicate: true });
    expect(reopened.stats().transitions).toBe(0);
  });

  it('applies the first of two equal writes in one batch and answers the second as its duplicate', async () => {
    const store = await open();
    await createTask(store, 'a');
    const w = write({
      taskId: 'a',
      expectedState: S.TASK_STATE_QUEUED,
      toState: S.TASK_STATE_DISPATCHED,
    });
    const [first, second] = await store.submit([w, w]);
    expect(first).toMatchObject({ code: 0, duplicate: false });
    expect(second).toEqual({ ...first, duplicate: true });
    expect((await store.getHistory('a')).transitions).toHaveLength(3);
  });

  it('returns the first task for a known idempotency key, in the same batch, later, and after restart', async () => {
    const store = await open();
    const [a, b] = await store.submit([
      createWrite('a', { idempotencyKey: 'key-1' }),
      createWrite('b', { idempotencyKey: 'key-1' }),
    ]);
    expect(a).toMatchObject({ code: 0, taskId: 'a', duplicate: false });
    expect(b).toMatchObject({
      code: 0,
      taskId: 'a',
      duplicate: true,
      revision: a?.revision,
      seq: 2,
    });
    await expect(store.getTask('b')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    const [c] = await store.submit([createWrite('c', { idempotencyKey: 'key-1' })]);
    expect(c).toMatchObject({ taskId: 'a', duplicate: true });
    await move(store, 'a', S.TASK_STATE_CANCELLED);
    const reopened = await reopen(store);
    const [d] = await reopened.submit([createWrite('d', { idempotencyKey: 'key-1' })]);
    expect(d).toMatchObject({ taskId: 'a', duplicate: true, revision: a?.revision });
    expect(reopened.stats()).toMatchObject({ tasksCreated: 0, duplicates: 1, transitions: 0 });
    const [e] = await reopened.submit([createWrite('e', { idempotencyKey: 'key-2' })]);
    expect(e).toMatchObject({ taskId: 'e', duplicate: false });
  });

  it('answers repeats of finished tasks alike when a commit reads a few keys on its thread or many in the pool', async () => {
    const store = await open();
    const n = SYNC_READ_MAX + 1;
    const ids = Array.from({ length: n }, (_, i) => `t${i}`);
    const created = await store.submit(
      ids.map((id) => createWrite(id, { idempotencyKey: `k-${id}` })),
    );
    expect(created.every((o) => o.code === 0)).toBe(true);
    await store.submit(
      ids.map((id) =>
        write({ taskId: id, expectedState: S.TASK_STATE_QUEUED, toState: S.TASK_STATE_CANCELLED }),
      ),
    );
    // Reopened, no task is live: every answer below needs a read of the store.
    const reopened = await reopen(store);
    for (const batch of [ids.slice(0, 3), ids]) {
      const byKey = await reopened.submit(
        batch.map((id) => createWrite(`new-${id}`, { idempotencyKey: `k-${id}` })),
      );
      expect(byKey.map((o) => [o.code, o.taskId, o.duplicate])).toEqual(
        batch.map((id) => [0, id, true]),
      );
      const byId = await reopened.submit(batch.map((id) => createWrite(id)));
      expect(new Set(byId.map((o) => o.reason))).toEqual(new Set(['TASK_EXISTS']));
    }
    expect(reopened.stats()).toMatchObject({ tasksCreated: 0, transitions: 0 });
  });
});

describe('several writes in one batch', () => {
  it('applies writes to one task in order, each against the state the previous one left', async () => {
    const store = await open();
    await createTask(store, 'a');
    const outcomes = await store.submit([
      write({ taskId: 'a', expectedState: S.TASK_STATE_QUEUED, toState: S.TASK_STATE_DISPATCHED }),
      write({ taskId: 'a', expectedState: S.TASK_STATE_DISPATCHED, toState: S.TASK_STATE_RUNNING }),
      write({ taskId: 'a', expectedState: S.TASK_STATE_DISPATCHED, toState: S.TASK_STATE_RUNNING }), // now stale
      write({
        taskId: 'a',
        expectedState: S.TASK_STATE_RUNNING,
        toState: S.TASK_STATE_QUEUED,
        stage: 's2',
      }),
    ]);
    expect(outcomes.map((o) => [o.code, o.reason, o.seq])).toEqual([
      [0, '', 3],
      [0, '', 4],
      [9, 'STATE_MISMATCH', 4],
      [0, '', 5],
    ]);
    expect(store.stats().commits).toBe(2);
    const task = await store.getTask('a');
    expect(task).toMatchObject({ state: S.TASK_STATE_QUEUED, stage: 's2', seq: 5 });
    expect(foldable(task)).toEqual(foldHistory((await store.getHistory('a')).transitions));
  });

  it('creates and finishes a task inside one batch', async () => {
    const store = await open();
    const outcomes = await store.submit([
      createWrite('a'),
      write({ taskId: 'a', expectedState: S.TASK_STATE_QUEUED, toState: S.TASK_STATE_CANCELLED }),
    ]);
    expect(outcomes.map((o) => o.code)).toEqual([0, 0]);
    expect(store.stats().unfinishedTasks).toBe(0);
    const reopened = await reopen(store);
    expect((await reopened.getTask('a')).state).toBe(S.TASK_STATE_CANCELLED);
    expect(reopened.listUnfinished().tasks).toEqual([]);
  });
});

describe('the backlog limit (--max-unfinished-bytes)', () => {
  const payload = (bytes: number) => ({ data: Buffer.alloc(bytes, 1), contentType: 'text/plain' });
  const create = (id: string, bytes: number) => createWrite(id, { payload: payload(bytes) });
  /** What a live task with `bytes` of payload is counted for. */
  const taking = (bytes: number) => TASK_MEMORY_OVERHEAD + bytes;

  it('refuses a submit that would pass it, counting the creates of the same batch, and lets tasks in the mesh go on', async () => {
    const limit = 3 * taking(3_000) + 1_000;
    const store = await open({ maxUnfinishedBytes: limit });
    const first = await store.submit([create('a', 3_000), create('b', 3_000), create('c', 3_000)]);
    expect(first.map((o) => o.code)).toEqual([0, 0, 0]);
    const [refused] = await store.submit([create('d', 0)]);
    expect(refused).toMatchObject({ code: 8, reason: 'BACKLOG_FULL' });
    expect(refused?.message).toContain(
      `take ${3 * taking(3_000)} bytes of memory (payloads, and ${TASK_MEMORY_OVERHEAD} a task), ` +
        `and this one's ${taking(0)} would pass the ${limit} allowed (--max-unfinished-bytes)`,
    );
    await expect(store.getTask('d')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    // A task already in the mesh moves on, even with a larger input for its next stage.
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_QUEUED, { stage: 's2', payload: payload(5_000) });
    // Ending tasks makes room: with b gone, a task of 2,000 bytes fits exactly, one of 2,500 not.
    await move(store, 'b', S.TASK_STATE_CANCELLED);
    expect((await store.submit([create('e', 2_500)]))[0]).toMatchObject({ reason: 'BACKLOG_FULL' });
    expect((await store.submit([create('f', 2_000)]))[0]?.code).toBe(0);
    // The count is rebuilt at open: no room is left for even one more empty task.
    const reopened = await reopen(store, { maxUnfinishedBytes: limit });
    expect((await reopened.submit([create('g', 0)]))[0]).toMatchObject({ reason: 'BACKLOG_FULL' });
    await move(reopened, 'c', S.TASK_STATE_CANCELLED);
    expect((await reopened.submit([create('h', 3_000)]))[0]?.code).toBe(0);
  });
});

describe('payload bytes', () => {
  it("keeps its own copy of a write's payload: not a view that holds the caller's whole message", async () => {
    const store = await open();
    // A decoded gRPC message: every payload in it is a view into one buffer.
    const message = Buffer.alloc(64 * 1024, 1);
    await store.submit([
      createWrite('a', { payload: { data: message.subarray(0, 100), contentType: 'text/plain' } }),
    ]);
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    const next = { data: message.subarray(100, 300), contentType: 'text/plain' };
    await move(store, 'a', S.TASK_STATE_QUEUED, { stage: 's2', payload: next });
    message.fill(9); // the caller reuses its buffer
    const task = await store.getTask('a');
    expect(task.input?.data).toEqual(Buffer.alloc(200, 1));
    expect(task.input?.data.buffer).not.toBe(message.buffer);
    const history = await store.getHistory('a');
    for (const t of history.transitions) expect(t.payload?.data.buffer).not.toBe(message.buffer);
  });
});
