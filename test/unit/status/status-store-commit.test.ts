import { setImmediate as tick } from 'node:timers/promises';
import { afterEach, describe, expect, it } from '@jest/globals';
import type { StatusStore } from '../../../services/status/status-store';
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
  TEST_PIPELINES,
  write,
} from './store-harness';

afterEach(async () => {
  await closeStores();
  cleanDirs();
});

interface Gate {
  /** Batches started and not yet released. */
  readonly held: number;
  release(fail?: Error): void;
  restore(): void;
}

/**
 * Holds every LevelDB batch write of `store` until released (or fails it), so a test can keep a
 * commit in flight. Test double at the LevelDB edge only; the store's code runs unchanged.
 */
function gateWrites(store: StatusStore): Gate {
  type Batch = { write(options?: unknown): Promise<void> };
  const db = Reflect.get(store, 'db') as { batch(): Batch };
  const original = db.batch;
  const waiting: { go: () => void; stop: (e: Error) => void }[] = [];
  db.batch = function gatedBatch(this: unknown): Batch {
    const batch = original.call(db);
    const write = batch.write.bind(batch);
    batch.write = (options) =>
      new Promise<void>((go, stop) => waiting.push({ go, stop })).then(() => write(options));
    return batch;
  };
  return {
    get held() {
      return waiting.length;
    },
    release(fail) {
      for (const w of waiting.splice(0)) {
        if (fail === undefined) w.go();
        else w.stop(fail);
      }
    },
    restore() {
      db.batch = original;
    },
  };
}

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await tick();
  }
}

describe('group commit', () => {
  it('commits a lone write at once, without waiting for company', async () => {
    const store = await open();
    await createTask(store, 'a');
    expect(store.stats()).toMatchObject({ commits: 1, transitions: 2 });
  });

  it('tells onCommitted of each commit: its transitions and the tasks it ended', async () => {
    const seen: { states: number[]; ended: string[] }[] = [];
    const store = await open({
      onCommitted: (entries, ended) =>
        seen.push({ states: entries.map((e) => e.entry.to), ended: ended.map((t) => t.taskId) }),
    });
    await createTask(store, 'a');
    await move(store, 'a', S.TASK_STATE_CANCELLED);
    expect(seen).toEqual([
      { states: [S.TASK_STATE_SUBMITTED, S.TASK_STATE_QUEUED], ended: [] },
      { states: [S.TASK_STATE_CANCELLED], ended: ['a'] },
    ]);
  });

  it('answers a durable commit OK even when onCommitted throws', async () => {
    const store = await open({
      onCommitted: () => {
        throw new Error('a broken metrics hook');
      },
    });
    await createTask(store, 'a');
    expect((await store.getTask('a')).state).toBe(S.TASK_STATE_QUEUED);
    expect(store.stats()).toMatchObject({ commits: 1, transitions: 2 });
  });

  it('counts the bytes it puts: a 10 kB input is written once, in the record', async () => {
    const store = await open();
    const data = Buffer.alloc(10_000, 7);
    await store.submit([createWrite('big', { payload: { data, contentType: 'text/plain' } })]);
    const { writtenBytes, puts } = store.stats();
    expect(puts).toBeGreaterThanOrEqual(3);
    expect(writtenBytes).toBeGreaterThan(10_000);
    expect(writtenBytes).toBeLessThan(10_000 + 1_000);
  });

  it('puts everything that arrives during a commit into the next single batch', async () => {
    const store = await open();
    const gate = gateWrites(store);
    const first = store.submit([createWrite('first')]);
    await until(() => gate.held === 1);
    // 300 submits from separate macrotasks while the first commit is in flight.
    const rest: Promise<unknown>[] = [];
    for (let i = 0; i < 300; i++) {
      rest.push(store.submit([createWrite(`t${i}`)]));
      if (i % 10 === 0) await tick();
    }
    expect(gate.held).toBe(1); // nothing else started: one commit in flight at a time
    gate.release();
    await first;
    await until(() => gate.held === 1);
    gate.release();
    const outcomes = (await Promise.all(rest)) as { code: number }[][];
    expect(outcomes.flat().every((o) => o.code === 0)).toBe(true);
    expect(store.stats()).toMatchObject({ commits: 2, transitions: 602, tasksCreated: 301 });
    gate.restore();
  });

  it('answers many concurrent writers with few batches', async () => {
    const store = await open();
    const ids = Array.from({ length: 2000 }, (_, i) => `c${i}`);
    await Promise.all(ids.map((id) => createTask(store, id)));
    const runs = ids.map(async (id) => {
      await move(store, id, S.TASK_STATE_DISPATCHED);
      await move(store, id, S.TASK_STATE_RUNNING);
    });
    await Promise.all(runs);
    const stats = store.stats();
    expect(stats.transitions).toBe(2000 * 4);
    expect(stats.commits).toBeLessThan(100);
  });

  it('rejects every waiter of a failed batch, changes no state, and writes nothing more until reopened', async () => {
    const failures: unknown[] = [];
    const store = await open({ onFailure: (err) => failures.push(err) });
    await createTask(store, 'a');
    const before = await store.getTask('a');
    const stats = store.stats();
    const gate = gateWrites(store);
    const failing = Promise.allSettled([
      store.submit([
        write({
          taskId: 'a',
          expectedState: S.TASK_STATE_QUEUED,
          toState: S.TASK_STATE_DISPATCHED,
        }),
      ]),
      store.submit([createWrite('b')]),
    ]);
    await until(() => gate.held === 1);
    gate.release(new Error('disk full'));
    const results = await failing;
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({
        kind: 'UNAVAILABLE',
        reason: 'STORE_WRITE_FAILED',
        message: expect.stringContaining('failed a write (disk full)'),
      });
    }
    gate.restore();
    await until(() => failures.length === 1);
    expect(await store.getTask('a')).toEqual(before);
    await expect(store.getTask('b')).rejects.toMatchObject({ reason: 'TASK_NOT_FOUND' });
    expect(store.stats()).toEqual(stats);
    // Reads go on; writes of every kind are refused: LevelDB's log may end in a torn record, and
    // records written after it would be dropped by the next recovery.
    await expect(move(store, 'a', S.TASK_STATE_DISPATCHED)).rejects.toMatchObject({
      reason: 'STORE_WRITE_FAILED',
    });
    await expect(
      store.savePipeline({ ...TEST_PIPELINES[0]!, name: 'fresh' }),
    ).rejects.toMatchObject({
      reason: 'STORE_WRITE_FAILED',
    });
    await expect(store.deleteTasks(['a'])).rejects.toMatchObject({ reason: 'STORE_WRITE_FAILED' });
    expect(failures).toHaveLength(1);
    // A reopened store (what a restart does) goes on, with no hole in the revisions.
    const reopened = await reopen(store);
    const outcome = await move(reopened, 'a', S.TASK_STATE_DISPATCHED);
    expect(outcome.revision).toBe(stats.revision + 1);
    expect((await reopened.getHistory('a')).transitions.map((t) => t.revision)).toEqual([1, 2, 3]);
  });

  it('commits what was submitted before close, then refuses new writes', async () => {
    const store = await open();
    const pending = store.submit([createWrite('a')]);
    const closing = store.close();
    await expect(store.submit([createWrite('b')])).rejects.toMatchObject({
      reason: 'STORE_CLOSED',
    });
    expect((await pending)[0]?.code).toBe(0);
    await closing;
    const reopened = await open({ dir: store.dir });
    expect((await reopened.getTask('a')).state).toBe(S.TASK_STATE_QUEUED);
  });
});

/** A model of what acknowledged writes said, to compare the reopened store against. */
type Model = Map<string, { state: number; attempt: number; seq: number; stage: string }>;

async function randomWalk(
  store: StatusStore,
  model: Model,
  rounds: number,
  rand: () => number,
): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    const writes = [...model.keys()].flatMap((id) => {
      const m = model.get(id);
      if (m === undefined || rand() < 0.3) return [];
      const options = nextMoves(m.state, m.stage);
      const pick = options[Math.floor(rand() * options.length)];
      return pick === undefined ? [] : [{ id, ...pick }];
    });
    // Spread over concurrent submits so that group commit mixes them.
    const outcomes = await Promise.all(
      writes.map(({ id, to, fields }) => {
        const m = model.get(id) as NonNullable<ReturnType<Model['get']>>;
        return store.submit([
          write({
            taskId: id,
            expectedState: m.state,
            expectedAttempt: m.attempt,
            toState: to,
            ...fields,
          }),
        ]);
      }),
    );
    outcomes.forEach(([o], i) => {
      const { id, to, fields } = writes[i] as NonNullable<(typeof writes)[number]>;
      expect(o?.code).toBe(0);
      const m = model.get(id) as NonNullable<ReturnType<Model['get']>>;
      const stage = fields.stage !== undefined && fields.stage !== '' ? fields.stage : m.stage;
      const attempt =
        stage !== m.stage ? 1 : fields.reason === 'WORKER_LOST' ? m.attempt + 1 : m.attempt;
      model.set(id, { state: to, attempt, seq: o?.seq ?? -1, stage });
    });
  }
}

function nextMoves(
  state: number,
  stage: string,
): { to: number; fields: { stage?: string; reason?: string } }[] {
  const next = `s${Number(stage.slice(1)) + 1}`;
  switch (state) {
    case S.TASK_STATE_QUEUED:
      return [{ to: S.TASK_STATE_DISPATCHED, fields: {} }];
    case S.TASK_STATE_DISPATCHED:
      return [
        { to: S.TASK_STATE_RUNNING, fields: {} },
        { to: S.TASK_STATE_QUEUED, fields: { reason: 'WORKER_LOST' } },
      ];
    case S.TASK_STATE_RUNNING:
      return [
        { to: S.TASK_STATE_QUEUED, fields: { stage: next } },
        { to: S.TASK_STATE_QUEUED, fields: { reason: 'WORKER_LOST' } },
        { to: S.TASK_STATE_SUCCEEDED, fields: {} },
      ];
    default:
      return [];
  }
}

function seeded(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

async function checkAgainst(store: StatusStore, model: Model): Promise<void> {
  for (const [id, m] of model) {
    const task = await store.getTask(id);
    expect({
      id,
      state: task.state,
      attempt: task.attempt,
      seq: task.seq,
      stage: task.stage,
    }).toEqual({ id, ...m });
    const history = (await store.getHistory(id)).transitions;
    expect(foldable(task)).toEqual(foldHistory(history));
  }
  const unfinished = new Set(store.listUnfinished([], 10_000).tasks.map((t) => t.taskId));
  for (const [id, m] of model) expect(unfinished.has(id)).toBe(m.state !== S.TASK_STATE_SUCCEEDED);
}

describe('durability in process', () => {
  it('keeps every acknowledged write across clean closes and abandoned (crash-like) stores', async () => {
    let store = await open();
    const model: Model = new Map();
    const rand = seeded(7);
    for (let round = 0; round < 8; round++) {
      const created = Array.from({ length: 40 }, (_, i) => `r${round}-${i}`);
      for (const [o] of await Promise.all(created.map((id) => store.submit([createWrite(id)])))) {
        model.set(o?.taskId ?? '', { state: S.TASK_STATE_QUEUED, attempt: 1, seq: 2, stage: 's1' });
      }
      await randomWalk(store, model, 3, rand);
      const revision = store.stats().revision;
      if (round % 2 === 0) {
        store = await reopen(store);
      } else {
        // Like a crash: LevelDB is closed under the store, without its clean-close marker.
        await (Reflect.get(store, 'db') as { close(): Promise<void> }).close();
        store = await open({ dir: store.dir });
      }
      expect(store.stats().revision).toBe(revision);
      await checkAgainst(store, model);
    }
    expect(model.size).toBe(320);
  });

  it('rebuilds live tasks whose DISPATCHED and RUNNING are only in the feed', async () => {
    let store = await open();
    await createTask(store, 'a');
    await move(store, 'a', S.TASK_STATE_DISPATCHED, { workerId: 'w7' });
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_RUNNING, {
      progress: { fraction: 0.25, message: 'a quarter', details: Buffer.from([1, 2]) },
    });
    const before = await store.getTask('a');
    const history = (await store.getHistory('a')).transitions;
    store = await reopen(store);
    expect(store.openReport.refoldedTasks).toBe(1);
    expect(await store.getTask('a')).toEqual(before);
    expect((await store.getHistory('a')).transitions).toEqual(history);
    expect((await store.getTask('a')).progress?.message).toBe('a quarter');
  });
});
