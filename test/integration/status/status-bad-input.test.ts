import { Status } from 'nice-grpc-common';
import { refusal, violatedFields } from '../../helpers/refusal';
import { Decorator, Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import type { TransitionOutcome } from '../../../gen/dsat/status/v1/status';
import { StatusServiceDefinition, TransitionWrite } from '../../../gen/dsat/status/v1/status';
import { TaskState, Transition, type Task, type TaskFilter } from '../../../gen/dsat/task/v1/task';
import { loadConfig, statusConfigSpec } from '../../../services/shared/config';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import { createLogger } from '../../../services/shared/logger';
import type { ServiceHandle } from '../../../services/shared/service-host';
import { maxPayloadBytes, replyBudget } from '../../../services/status/reply-size';
import { startStatusServer } from '../../../services/status/server';
import { TASK_LIMITS } from '../../../services/shared/task-limits';
import { tempDir } from '../../helpers/temp-dir';

/*
 * Bad input through the status service's gRPC API, on a real server and LevelDB: each is refused
 * with a status naming its field and changes nothing, and what is accepted stays readable.
 */
jest.setTimeout(60_000);

const S = TaskState;
const MiB = 1024 * 1024;
const logger = createLogger('test', 'silent');

type Client = ReturnType<typeof statusClient>;
type PipelineFields = Parameters<typeof Pipeline.fromPartial>[0];

/** Channels the test opened, closed after it. */
const channels: { close(): void }[] = [];

function statusClient(address: string) {
  const channel = createDsatChannel(address);
  channels.push(channel);
  return createDsatClient(StatusServiceDefinition, channel);
}

let server: ServiceHandle;
let dir: { path: string; cleanup(): void };
let client: Client;

beforeEach(async () => {
  dir = tempDir();
  server = await startStatusServer(
    loadConfig(statusConfigSpec, { port: '0', dataDir: dir.path, shutdownGrace: '1s' }, {}),
    { logger },
  );
  client = statusClient(server.address);
});

afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await server.shutdown();
  dir.cleanup();
});

let ids = 0;

function write(fields: Partial<TransitionWrite> & Pick<TransitionWrite, 'taskId'>) {
  return TransitionWrite.fromPartial({ transitionId: `t-${++ids}`, ...fields });
}

function createWrite(
  taskId: string,
  pipeline: string,
  version: number,
  stage: string,
  input: Buffer = Buffer.from('{}'),
): TransitionWrite {
  return write({
    taskId,
    toState: S.TASK_STATE_QUEUED,
    stage,
    payload: { data: input, contentType: 'application/octet-stream' },
    create: {
      pipeline,
      pipelineVersion: version,
      idempotencyKey: '',
      priority: 0,
      traceparent: '',
    },
  });
}

async function commit(writes: TransitionWrite[]): Promise<TransitionOutcome[]> {
  return (await client.commitTransitions({ writes })).outcomes;
}

async function commitOk(writes: TransitionWrite[]): Promise<void> {
  for (const o of await commit(writes)) {
    if (o.code !== 0) throw new Error(`refused: ${o.message}`);
  }
}

async function save(p: PipelineFields): Promise<Pipeline> {
  return (await client.savePipeline({ pipeline: Pipeline.fromPartial(p) })).pipeline!;
}

/** Moves a task from the state it is in, checking the write was applied. */
async function move(taskId: string, toState: TaskState, fields: Partial<TransitionWrite> = {}) {
  const task = (await client.getTask({ taskId })).task!;
  await commitOk([
    write({ taskId, expectedState: task.state, expectedAttempt: task.attempt, toState, ...fields }),
  ]);
}

/** Byte equality: jest's toEqual walks a 1 MiB buffer byte by byte, for seconds. */
function same(a: Uint8Array | undefined, b: Buffer): boolean {
  return a !== undefined && b.equals(a);
}

function filter(f: Partial<TaskFilter>): TaskFilter {
  return { states: [], pipeline: '', stage: '', actionKey: '', ...f };
}

/** Every page of a paged read, and how many pages it took. */
async function allPages<T>(
  read: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>,
): Promise<{ items: T[]; pages: number }> {
  const items: T[] = [];
  let pages = 0;
  let token = '';
  do {
    const page = await read(token);
    expect(page.items.length).toBeGreaterThan(0);
    items.push(...page.items);
    pages++;
    token = page.nextPageToken;
  } while (token !== '');
  return { items, pages };
}

describe('action keys', () => {
  it('matches a pathological key against a 63-character name at once, in ListTasks and DeleteTasks', async () => {
    const name = 'a'.repeat(63);
    const p = await save({ name, stages: [{ name: 's1' }] });
    await commitOk([createWrite('live', name, p.version, 's1')]);
    await commitOk([createWrite('ended', name, p.version, 's1')]);
    await move('ended', S.TASK_STATE_CANCELLED);
    // A backtracking RegExp took ~0.6 s a match on this key, ~10x more for each further `a*`.
    const key = '*?*a*a*a*a*a*b?*';
    const started = Date.now();
    let answered = 0;
    while (answered < 20 && Date.now() - started < 5_000) {
      expect((await client.listTasks({ filter: filter({ actionKey: key }) })).tasks).toEqual([]);
      answered++;
    }
    expect(answered).toBe(20);
    expect(await client.deleteTasks({ taskIds: [], filter: filter({ actionKey: key }) })).toEqual({
      deletedCount: 0,
    });
    // The same shape matches where it should.
    const found = await client.listTasks({ filter: filter({ actionKey: '*?*a*a*a*a*a?s*' }) });
    expect(found.tasks.map((t) => t.taskId)).toEqual(['live', 'ended']);
  });

  it('refuses an action key longer than 256 characters, naming filter.action_key', async () => {
    const err = await refusal(
      client.listTasks({ filter: filter({ actionKey: `*?${'*a'.repeat(200)}?*` }) }),
    );
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(violatedFields(err)).toEqual(['filter.action_key']);
  });
});

describe('transition masks', () => {
  it('refuses a watch whose mask names no Transition field, naming the path', async () => {
    const watch = client.watchEvents({ transitionMask: ['task_id', 'taskid'] });
    const err = await refusal(watch[Symbol.asyncIterator]().next());
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(violatedFields(err)).toEqual(['transition_mask.paths[1]']);
    expect(err.details).toContain('"taskid" is not a Transition field');
  });

  it('sends a masked watch only the named fields', async () => {
    const p = await save({ name: 'masked', stages: [{ name: 's1' }] });
    await commitOk([createWrite('first', 'masked', p.version, 's1')]);
    const before = (await client.getStoreStats({})).revision;
    await commitOk([createWrite('m', 'masked', p.version, 's1')]);
    const watch = client.watchEvents({
      fromRevision: before,
      transitionMask: ['task_id', 'to_state', 'stage'],
    });
    const got = [];
    for await (const batch of watch) {
      got.push(...batch.transitions);
      if (got.length >= 2) break;
    }
    expect(got).toEqual(
      [S.TASK_STATE_SUBMITTED, S.TASK_STATE_QUEUED].map((toState) =>
        Transition.fromPartial({ taskId: 'm', toState, stage: 's1' }),
      ),
    );
  });
});

describe('replies under the max message size', () => {
  it('lists five tasks with 1 MiB payloads page by page, nothing missing, after a restart too', async () => {
    const p = await save({ name: 'big', stages: [{ name: 's1' }] });
    const taskIds = ['t0', 't1', 't2', 't3', 't4'];
    for (const id of taskIds) {
      await commitOk([createWrite(id, 'big', p.version, 's1', Buffer.alloc(MiB, id))]);
    }
    const check = async () => {
      const listed = await allPages(async (pageToken) => {
        const r = await client.listTasks({ filter: filter({}), pageSize: 0, pageToken });
        return { items: r.tasks, nextPageToken: r.nextPageToken };
      });
      const unfinished = await allPages(async (pageToken) => {
        const r = await client.listUnfinishedTasks({ stages: [], pageSize: 0, pageToken });
        return { items: r.tasks, nextPageToken: r.nextPageToken };
      });
      for (const { items, pages } of [listed, unfinished]) {
        expect(pages).toBeGreaterThan(1);
        expect(items.map((t) => t.taskId).sort()).toEqual(taskIds);
        for (const t of items) expect(same(t.input?.data, Buffer.alloc(MiB, t.taskId))).toBe(true);
      }
    };
    await check();
    // A restart is when a router pages ListUnfinishedTasks to rebuild its queues.
    await server.shutdown();
    server = await startStatusServer(
      loadConfig(statusConfigSpec, { port: '0', dataDir: dir.path, shutdownGrace: '1s' }, {}),
      { logger },
    );
    client = statusClient(server.address);
    await check();
  });

  it('pages a history and splits a feed batch whose 1 MiB payloads pass the max message size', async () => {
    // Each PUBLISH stage publishes the 1 MiB input: five 1 MiB transitions in one commit.
    const stages = ['p1', 'p2', 'p3', 'p4', 'p5'].map((name, i, all) => ({
      name,
      next: all[i + 1] === undefined ? [] : [all[i + 1] as string],
      decorators: [Decorator.DECORATOR_PUBLISH],
    }));
    const p = await save({ name: 'news', stages });
    const input = Buffer.alloc(MiB, 'n');
    await commitOk([createWrite('n', 'news', p.version, 'p1', input)]);
    const before = (await client.getStoreStats({})).revision;
    const watch = client.watchEvents({ filter: filter({}), fromRevision: before });
    const moves = stages.map((s, i) =>
      write({
        taskId: 'n',
        expectedState: S.TASK_STATE_QUEUED,
        toState: i === stages.length - 1 ? S.TASK_STATE_SUCCEEDED : S.TASK_STATE_QUEUED,
        stage: stages[i + 1]?.name ?? s.name,
      }),
    );
    await commitOk(moves);

    const seen: number[] = [];
    for await (const batch of watch) {
      for (const t of batch.transitions) {
        expect(same(t.payload?.data, input)).toBe(true);
        seen.push(t.revision);
      }
      if (seen.length === moves.length) break;
    }
    expect(seen).toEqual(moves.map((_, i) => before + 1 + i));

    const history = await allPages(async (pageToken) => {
      const r = await client.getTaskHistory({ taskId: 'n', pageSize: 0, pageToken });
      return { items: r.transitions, nextPageToken: r.nextPageToken };
    });
    expect(history.pages).toBeGreaterThan(1);
    expect(history.items.map((t) => t.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const task = (await client.getTask({ taskId: 'n' })).task!;
    expect(task.state).toBe(S.TASK_STATE_SUCCEEDED);
    expect(same(task.output?.data, input)).toBe(true);
  });
});

describe('write limits', () => {
  async function runningTask(taskId: string): Promise<Task> {
    const p = await save({ name: 'caps', stages: [{ name: 's1', next: ['s2'] }, { name: 's2' }] });
    await commitOk([createWrite(taskId, 'caps', p.version, 's1')]);
    await move(taskId, S.TASK_STATE_DISPATCHED, { workerId: 'w1' });
    await move(taskId, S.TASK_STATE_RUNNING);
    return (await client.getTask({ taskId })).task!;
  }

  it('refuses oversized or malformed progress, errors and payloads by field; the rest of the batch commits', async () => {
    const before = await runningTask('a');
    const progress = { fraction: 0.5, message: 'half', details: Buffer.from('p') };
    const error = { code: 'BOOM', message: 'boom', retryable: true, details: {} };
    const checkpoint = (over: Partial<TransitionWrite>) =>
      write({
        taskId: 'a',
        expectedState: S.TASK_STATE_RUNNING,
        expectedAttempt: 1,
        toState: S.TASK_STATE_RUNNING,
        progress,
        ...over,
      });
    const L = TASK_LIMITS;
    const bad: [string, Partial<TransitionWrite>][] = [
      [
        'progress.details',
        { progress: { ...progress, details: Buffer.alloc(L.progressDetailsBytes + 1) } },
      ],
      [
        'progress.message',
        { progress: { ...progress, message: 'm'.repeat(L.progressMessageChars + 1) } },
      ],
      ['progress.fraction', { progress: { ...progress, fraction: NaN } }],
      ['progress.fraction', { progress: { ...progress, fraction: 1.5 } }],
      [
        'error.details',
        { error: { ...error, details: { stack: 's'.repeat(L.errorDetailsBytes) } } },
      ],
      ['error.message', { error: { ...error, message: 'e'.repeat(L.errorMessageChars + 1) } }],
      ['error.code', { error: { ...error, code: 'C'.repeat(L.errorCodeChars + 1) } }],
      ['error.code', { error: { ...error, code: 'TWO\nLINES' } }],
    ];
    // Everything at its limit is accepted.
    const atLimits = checkpoint({
      progress: {
        fraction: 1,
        message: 'm'.repeat(L.progressMessageChars),
        details: Buffer.alloc(L.progressDetailsBytes, 1),
      },
      error: {
        code: 'C'.repeat(L.errorCodeChars),
        message: 'e'.repeat(L.errorMessageChars),
        retryable: true,
        details: { stack: 's'.repeat(L.errorDetailsBytes - 'stack'.length - 8) },
      },
    });
    const outcomes = await commit([...bad.map(([, over]) => checkpoint(over)), atLimits]);
    expect(outcomes.map((o) => o.code)).toEqual([...bad.map(() => Status.INVALID_ARGUMENT), 0]);
    bad.forEach(([field], i) => expect(outcomes[i]?.message).toMatch(new RegExp(`^${field}: `)));

    const after = (await client.getTask({ taskId: 'a' })).task!;
    expect(after.seq).toBe(before.seq + 1);
    expect(after.progress?.details.length).toBe(L.progressDetailsBytes);
    const history = (await client.getTaskHistory({ taskId: 'a' })).transitions;
    expect(history.map((t) => t.transitionId)).not.toContain(outcomes[0]?.transitionId);
  });

  it('refuses a payload a record could not hold with RESOURCE_EXHAUSTED; the largest allowed one stays readable', async () => {
    const max = maxPayloadBytes(replyBudget(4 * MiB));
    const p = await save({ name: 'caps', stages: [{ name: 's1' }] });
    const [tooBig] = await commit([
      createWrite('big', 'caps', p.version, 's1', Buffer.alloc(max + 1)),
    ]);
    expect(tooBig).toMatchObject({ code: Status.RESOURCE_EXHAUSTED, reason: 'PAYLOAD_TOO_LARGE' });
    expect(tooBig?.message).toMatch(/^payload: /);
    await expect(client.getTask({ taskId: 'big' })).rejects.toMatchObject({
      code: Status.NOT_FOUND,
    });

    // A record at every limit at once: input, output, progress and error.
    await commitOk([createWrite('full', 'caps', p.version, 's1', Buffer.alloc(max, 'i'))]);
    await move('full', S.TASK_STATE_DISPATCHED, { workerId: 'w'.repeat(256) });
    await move('full', S.TASK_STATE_RUNNING, {
      progress: {
        fraction: 1,
        message: '\u{1F600}'.repeat(TASK_LIMITS.progressMessageChars / 2),
        details: Buffer.alloc(TASK_LIMITS.progressDetailsBytes),
      },
      error: {
        code: 'E'.repeat(TASK_LIMITS.errorCodeChars),
        message: '\u00e9'.repeat(TASK_LIMITS.errorMessageChars),
        retryable: true,
        details: { d: 'x'.repeat(TASK_LIMITS.errorDetailsBytes - 9) },
      },
    });
    await move('full', S.TASK_STATE_SUCCEEDED, {
      payload: { data: Buffer.alloc(max, 'o'), contentType: 'application/octet-stream' },
    });
    const task = (await client.getTask({ taskId: 'full' })).task!;
    expect(task.input?.data.length).toBe(max);
    expect(task.output?.data.length).toBe(max);
    const listed = await client.listTasks({ filter: filter({}), pageSize: 0, pageToken: '' });
    expect(listed.tasks.map((t) => t.taskId)).toEqual(['full']);
  });
});

describe('SavePipeline', () => {
  it.each<[string, string, PipelineFields]>([
    ['no stages', 'pipeline.stages', { stages: [] }],
    ['a self-cycle', 'pipeline.stages[0].next[0]', { stages: [{ name: 'a', next: ['a'] }] }],
    [
      'an unknown next stage',
      'pipeline.stages[0].next[0]',
      { stages: [{ name: 'a', next: ['b'] }] },
    ],
    [
      'decorator 77',
      'pipeline.stages[0].decorators[0]',
      { stages: [{ name: 'a', decorators: [77 as Decorator] }] },
    ],
    [
      'entry stage nowhere',
      'pipeline.entry_stage',
      { entryStage: 'nowhere', stages: [{ name: 'a' }] },
    ],
    [
      'a negative duration',
      'pipeline.stages[0].queue_timeout',
      { stages: [{ name: 'a', queueTimeout: { seconds: -5 } }] },
    ],
    [
      'a run_timeout of 1e15 s',
      'pipeline.stages[0].run_timeout',
      { stages: [{ name: 'a', runTimeout: { seconds: 1e15 } }] },
    ],
  ])('refuses a pipeline with %s, naming %s, and stores nothing', async (_, field, bad) => {
    const err = await refusal(
      client.savePipeline({ pipeline: Pipeline.fromPartial({ name: 'bad', ...bad }) }),
    );
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(violatedFields(err)).toContain(field);
    expect((await client.listPipelines({ pageSize: 0, pageToken: '' })).pipelines).toEqual([]);
  });
});

describe('creates', () => {
  it('refuses a task in an unsaved pipeline, version or stage, naming the field; the rest of the batch commits', async () => {
    const p = await save({ name: 'real', stages: [{ name: 's1' }] });
    const outcomes = await commit([
      createWrite('junk-pipeline', 'no-such-pipeline', 77, 'ghost'),
      createWrite('junk-version', 'real', 77, 's1'),
      createWrite('junk-stage', 'real', p.version, 'ghost'),
      createWrite('good', 'real', p.version, 's1'),
    ]);
    expect(outcomes.map((o) => [o.code, o.message.split(':')[0]])).toEqual([
      [Status.NOT_FOUND, 'create.pipeline'],
      [Status.NOT_FOUND, 'create.pipeline_version'],
      [Status.INVALID_ARGUMENT, 'stage'],
      [0, expect.any(String)],
    ]);
    const unfinished = await client.listUnfinishedTasks({ stages: [], pageSize: 0, pageToken: '' });
    expect(unfinished.tasks.map((t) => t.taskId)).toEqual(['good']);
    await expect(client.getTask({ taskId: 'junk-pipeline' })).rejects.toMatchObject({
      code: Status.NOT_FOUND,
    });
  });
});

describe('ApplyTransitions with positional outcomes', () => {
  it('leaves the ids out of OK outcomes only, one outcome per write in order; duplicates and refusals keep them', async () => {
    const p = await save({ name: 'pos', stages: [{ name: 's1' }] });
    const first = createWrite('pos-1', 'pos', p.version, 's1');
    const answer = async (positionalOutcomes: boolean, writes: TransitionWrite[]) => {
      async function* one() {
        yield { writes, positionalOutcomes };
      }
      for await (const res of client.applyTransitions(one())) {
        return res.outcomes;
      }
      throw new Error('no answer');
    };
    const outcomes = await answer(true, [
      first,
      createWrite('pos-2', 'pos', p.version, 'ghost'),
      createWrite('pos-3', 'pos', p.version, 's1'),
      first,
    ]);
    expect(outcomes.map((o) => [o.transitionId, o.taskId, o.code, o.duplicate])).toEqual([
      ['', '', 0, false],
      [expect.stringMatching(/^t-/), 'pos-2', Status.INVALID_ARGUMENT, false],
      ['', '', 0, false],
      [first.transitionId, 'pos-1', 0, true],
    ]);
    // The numbers stay: a writer needs the seq a move leaves.
    expect([outcomes[2]!.seq > 0, outcomes[2]!.revision > 0]).toEqual([true, true]);
    // Without the flag every outcome names its write.
    const named = await answer(false, [createWrite('pos-4', 'pos', p.version, 's1')]);
    expect(named.map((o) => [o.transitionId.startsWith('t-'), o.taskId])).toEqual([
      [true, 'pos-4'],
    ]);
  });
});
