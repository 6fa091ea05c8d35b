import { setImmediate as tick } from 'node:timers/promises';
import { afterEach, describe, expect, it } from '@jest/globals';
import { WatchEventsResponse } from '../../../gen/dsat/status/v1/status';
import { Decorator, Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { Transition } from '../../../gen/dsat/task/v1/task';
import type { StatusStore } from '../../../services/status/status-store';
import { compileTransitionMask } from '../../../services/status/transition-mask';
import {
  S,
  cleanDirs,
  closeStores,
  createTask,
  createWrite,
  move,
  nextWithin,
  open,
  testPipeline,
  write,
} from './store-harness';

afterEach(async () => {
  await closeStores();
  cleanDirs();
});

/** Every transition in the store, in revision order, from the tasks' own histories. */
async function allTransitions(store: StatusStore, ids: Iterable<string>): Promise<Transition[]> {
  const all: Transition[] = [];
  for (const id of ids) all.push(...(await store.getHistory(id, 10_000)).transitions);
  return all.sort((a, b) => a.revision - b.revision);
}

/** Drives `count` tasks through three stages with concurrent writers; returns their ids. */
async function workload(store: StatusStore, count: number, prefix = 'w'): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  await Promise.all(
    ids.map(async (id) => {
      await createTask(store, id);
      for (let s = 1; s <= 3; s++) {
        await move(store, id, S.TASK_STATE_DISPATCHED, { workerId: `w${s}` });
        await move(store, id, S.TASK_STATE_RUNNING);
        await (s === 3
          ? move(store, id, S.TASK_STATE_SUCCEEDED, {
              payload: { data: Buffer.from(id), contentType: 'text/plain' },
            })
          : move(store, id, S.TASK_STATE_QUEUED, { stage: `s${s + 1}` }));
      }
    }),
  );
  return ids;
}

describe('watchTask', () => {
  it('sends the record, then each transition live, and ends after the terminal one', async () => {
    const store = await open();
    await createTask(store, 'a');
    const it = store.watchTask('a', 0)[Symbol.asyncIterator]();
    const first = await nextWithin(it);
    expect(first.value?.event).toMatchObject({ $case: 'snapshot', value: { taskId: 'a', seq: 2 } });
    const writer = (async () => {
      await move(store, 'a', S.TASK_STATE_DISPATCHED);
      await move(store, 'a', S.TASK_STATE_RUNNING);
      await move(store, 'a', S.TASK_STATE_SUCCEEDED);
    })();
    const seen: number[] = [];
    for (;;) {
      const r = await nextWithin(it);
      if (r.done === true) break;
      if (r.value.event?.$case === 'transition') seen.push(r.value.event.value.seq);
    }
    await writer;
    expect(seen).toEqual([3, 4, 5]);
    expect(store.stats().watchers).toBe(0);
  });

  it('resumes after a revision with exactly the later transitions, without a record', async () => {
    const store = await open();
    await createTask(store, 'a');
    const d = await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_CANCELLED);
    const events = [];
    for await (const e of store.watchTask('a', d.revision)) events.push(e.event);
    expect(events.map((e) => e?.$case)).toEqual(['transition', 'transition']);
    expect(events.map((e) => (e?.$case === 'transition' ? e.value.toState : 0))).toEqual([
      S.TASK_STATE_RUNNING,
      S.TASK_STATE_CANCELLED,
    ]);
  });

  it('sends only the record of a task that has ended', async () => {
    const store = await open();
    await createTask(store, 'a');
    await move(store, 'a', S.TASK_STATE_CANCELLED);
    const events = [];
    for await (const e of store.watchTask('a', 0)) events.push(e.event?.$case);
    expect(events).toEqual(['snapshot']);
  });

  it('refuses an unknown task and a revision ahead of the store', async () => {
    const store = await open();
    await createTask(store, 'a');
    await expect(store.watchTask('nope', 0).next()).rejects.toMatchObject({
      reason: 'TASK_NOT_FOUND',
    });
    await expect(store.watchTask('a', 99).next()).rejects.toMatchObject({
      kind: 'OUT_OF_RANGE',
      reason: 'REVISION_AHEAD',
    });
  });

  it('stops when its signal aborts and when the store closes', async () => {
    const store = await open();
    await createTask(store, 'a');
    const ac = new AbortController();
    const it = store.watchTask('a', 0, ac.signal)[Symbol.asyncIterator]();
    await nextWithin(it); // snapshot
    const pending = nextWithin(it);
    ac.abort();
    expect((await pending).done).toBe(true);
    const other = store.watchTask('a', 0)[Symbol.asyncIterator]();
    await nextWithin(other);
    const ended = expect(nextWithin(other)).rejects.toMatchObject({ reason: 'STORE_CLOSED' });
    await store.close();
    await ended;
  });
});

/**
 * Holds the store's next LevelDB `method` call (keys() or iterator()) until released, to run a
 * commit at an exact point of a watcher's replay. Test double at the LevelDB edge only.
 */
function holdNext(
  store: StatusStore,
  method: 'keys' | 'iterator',
): { reached: Promise<void>; release(): void } {
  type Reader = { all(): Promise<unknown>; nextv(n: number): Promise<unknown> };
  const db = Reflect.get(store, 'db') as Record<typeof method, (options: unknown) => Reader>;
  const original = db[method];
  let release!: () => void;
  let reached!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const reachedP = new Promise<void>((r) => (reached = r));
  db[method] = function held(options: unknown): Reader {
    // keys() runs on an iterator of its own: hold only the call asked for.
    if (method === 'iterator' && (options as { values?: boolean }).values === false) {
      return original.call(db, options);
    }
    db[method] = original;
    const reader = original.call(db, options);
    const hold =
      <T>(call: () => Promise<T>) =>
      async (): Promise<T> => {
        reached();
        await gate;
        return call();
      };
    if (method === 'keys') reader.all = hold(reader.all.bind(reader));
    else {
      const nextv = reader.nextv.bind(reader);
      let first = true;
      reader.nextv = async (n: number) => {
        if (first) {
          first = false;
          return hold(() => nextv(n))();
        }
        return nextv(n);
      };
    }
    return reader;
  };
  return { reached: reachedP, release };
}

async function revisionsUntil(
  it: AsyncIterator<WatchEventsResponse>,
  last: number,
): Promise<number[]> {
  const seen: number[] = [];
  while (seen[seen.length - 1] !== last) {
    const r = await nextWithin(it);
    if (r.done === true) break;
    seen.push(...r.value.transitions.map((t: Transition) => t.revision));
  }
  return seen;
}

describe('the switch from replay to live', () => {
  it('delivers a commit made after the replay snapshot (subscribed before reading)', async () => {
    const store = await open();
    for (let i = 0; i < 5; i++) await createTask(store, `a${i}`); // revisions 1..10
    const held = holdNext(store, 'iterator');
    const it = store.watchEvents(undefined, 2)[Symbol.asyncIterator]();
    const first = revisionsUntil(it, 12);
    await held.reached; // the replay's snapshot is taken and its first read is held
    await createTask(store, 'late'); // 11, 12: not in the snapshot
    held.release();
    expect(await first).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    await it.return?.(undefined);
  });

  it('sends a commit that is both in the replay and in the inbox only once', async () => {
    const store = await open();
    for (let i = 0; i < 5; i++) await createTask(store, `a${i}`);
    const held = holdNext(store, 'keys'); // the seek before the replay's snapshot
    const it = store.watchEvents(undefined, 2)[Symbol.asyncIterator]();
    const first = revisionsUntil(it, 12);
    await held.reached;
    await createTask(store, 'both'); // 11, 12: published to the inbox, then in the snapshot too
    held.release();
    expect(await first).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    await createTask(store, 'after');
    expect(await revisionsUntil(it, 14)).toEqual([13, 14]);
    await it.return?.(undefined);
  });

  it('finds a dead letter that is redriven while the watcher reads its record', async () => {
    const store = await open();
    await createTask(store, 'a');
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await move(store, 'a', S.TASK_STATE_DEAD_LETTERED);
    const db = Reflect.get(store, 'db') as { get(key: string): Promise<unknown> };
    const get = db.get;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const atGet = new Promise<void>((r) => (reached = r));
    db.get = async (key: string) => {
      db.get = get;
      reached();
      await gate;
      return get.call(db, key);
    };
    const it = store.watchTask('a', 0)[Symbol.asyncIterator]();
    const first = nextWithin(it);
    await atGet;
    await move(store, 'a', S.TASK_STATE_QUEUED, { reason: 'REDRIVE' }); // t:a moves to u:a
    release();
    const snapshot = (await first).value?.event;
    expect(snapshot).toMatchObject({
      $case: 'snapshot',
      value: { state: S.TASK_STATE_QUEUED, seq: 6 },
    });
    await move(store, 'a', S.TASK_STATE_CANCELLED);
    expect((await nextWithin(it)).value?.event).toMatchObject({
      $case: 'transition',
      value: { seq: 7 },
    });
    expect((await nextWithin(it)).done).toBe(true);
  });
});

describe('watchEvents', () => {
  it('resumes after random disconnects with exactly every transition, in order, over 10,000', async () => {
    const store = await open();
    const received: Transition[] = [];
    let cursor = 0;
    let done = false;
    let current = new AbortController();
    let seed = 12345;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    let reconnects = 0;
    const watcher = (async () => {
      while (!done || cursor < store.stats().revision) {
        const ac = (current = new AbortController());
        const budget = 1 + Math.floor(rand() * 400); // transitions before this watcher drops
        let got = 0;
        for await (const batch of store.watchEvents(undefined, cursor, ac.signal)) {
          for (const t of batch.transitions) received.push(t);
          got += batch.transitions.length;
          cursor = batch.revision;
          if (got >= budget || (done && cursor >= store.stats().revision)) break;
          if (rand() < 0.05) await tick(); // a slow consumer now and then
        }
        reconnects++;
      }
    })();
    // 10,000+ transitions: 910 tasks × 11, written by concurrent writers.
    const ids = await workload(store, 910);
    done = true;
    const last = store.stats().revision;
    while (cursor < last) await tick();
    current.abort(); // the watcher has everything and waits for more: let it go
    await watcher;
    const expected = await allTransitions(store, ids);
    expect(expected.length).toBeGreaterThanOrEqual(10_000);
    expect(received.map((t) => t.revision)).toEqual(expected.map((t) => t.revision));
    expect(received).toEqual(expected);
    expect(reconnects).toBeGreaterThan(10);
  }, 60_000);

  it('lets a watcher that falls behind its buffer catch up from the store, missing nothing', async () => {
    const store = await open({ watchBufferSize: 16 });
    await createTask(store, 'seed');
    const from = store.stats().revision;
    const it = store.watchEvents(undefined, from)[Symbol.asyncIterator]();
    const ids = await workload(store, 60, 'slow'); // written while the watcher reads nothing
    const got: Transition[] = [];
    while (got.length < 660) {
      const r = await nextWithin(it);
      if (r.done === true) break;
      got.push(...r.value.transitions);
    }
    expect(got).toEqual(await allTransitions(store, ids));
    await it.return?.(undefined);
  });

  it('starts at the current end for revision 0, then sends only new commits', async () => {
    const store = await open();
    await createTask(store, 'old');
    const it = store.watchEvents(undefined, 0)[Symbol.asyncIterator]();
    const next = nextWithin(it);
    await createTask(store, 'new');
    const r = await next;
    expect(r.value?.transitions.map((t: Transition) => t.taskId)).toEqual(['new', 'new']);
    expect(r.value?.revision).toBe(4);
    await it.return?.(undefined);
  });

  it('filters by state, pipeline, stage and action key, and tells a quiet filter its revision', async () => {
    // demo is saved here with a PUBLISH stage, as version 1 that the tasks pin.
    const store = await open({ watchProgressEvery: 1, pipelines: [testPipeline('other')] });
    await store.savePipeline(
      Pipeline.fromPartial({
        name: 'demo',
        stages: [
          { name: 's1', next: ['s2'] },
          { name: 's2', decorators: [Decorator.DECORATOR_PUBLISH] },
        ],
      }),
    );
    const collect = async (
      filter: Parameters<StatusStore['watchEvents']>[0],
    ): Promise<WatchEventsResponse[]> => {
      const out: WatchEventsResponse[] = [];
      for await (const b of store.watchEvents(filter, 0)) {
        out.push(b);
        if (b.revision >= 14) break;
      }
      return out;
    };
    const filters = {
      queued: { states: [S.TASK_STATE_QUEUED], pipeline: '', stage: '', actionKey: '' },
      other: { states: [], pipeline: 'other', stage: '', actionKey: '' },
      s2: { states: [], pipeline: '', stage: 's2', actionKey: '' },
      published: { states: [], pipeline: '', stage: '', actionKey: '*?demo@PUBLISH?*' },
    };
    const watches = Object.fromEntries(Object.entries(filters).map(([k, f]) => [k, collect(f)]));
    await tick();
    await createTask(store, 'a'); // 1, 2
    await move(store, 'a', S.TASK_STATE_DISPATCHED); // 3
    await move(store, 'a', S.TASK_STATE_RUNNING); // 4
    const forS2 = { data: Buffer.from('for s2'), contentType: 'text/plain' };
    await move(store, 'a', S.TASK_STATE_QUEUED, { stage: 's2', payload: forS2 }); // 5
    await move(store, 'a', S.TASK_STATE_SUCCEEDED); // 6: s2 is PUBLISH: done without a worker
    await createTask(store, 'b', { pipeline: 'other' }); // 7, 8
    for (let i = 0; i < 3; i++) await createTask(store, `c${i}`); // 9 .. 14
    const flat = async (k: string) =>
      (await (watches[k] as Promise<WatchEventsResponse[]>)).flatMap((b) =>
        b.transitions.map((t) => t.revision),
      );
    expect(await flat('queued')).toEqual([2, 5, 8, 10, 12, 14]);
    expect(await flat('other')).toEqual([7, 8]);
    expect(await flat('s2')).toEqual([5, 6]);
    // Everything at the PUBLISH stage: queued there, then published and done without a worker.
    expect(await flat('published')).toEqual([5, 6]);
    const published = (await (watches.published as Promise<WatchEventsResponse[]>)).flatMap(
      (b) => b.transitions,
    );
    expect(published[1]?.payload?.data.toString()).toBe('for s2');
    // The quiet 'other' watch is told the revision it has seen now and then.
    const other = await (watches.other as Promise<WatchEventsResponse[]>);
    expect(other.some((b) => b.transitions.length === 0 && b.revision >= 13)).toBe(true);
  });

  it('refuses a revision older than the retained feed with REVISION_COMPACTED', async () => {
    const store = await open({ feedWindowRevisions: 10 });
    await workload(store, 5);
    const report = await store.sweep();
    expect(report.segmentsDeleted).toBeGreaterThan(0);
    const start = store.stats().feedStartRevision;
    expect(start).toBeGreaterThan(2);
    await expect(store.watchEvents(undefined, 1).next()).rejects.toMatchObject({
      kind: 'OUT_OF_RANGE',
      reason: 'REVISION_COMPACTED',
      field: 'from_revision',
    });
    await expect(store.watchTask('w0', 1).next()).rejects.toMatchObject({
      reason: 'REVISION_COMPACTED',
    });
    // The first retained revision can still be resumed from.
    const it = store.watchEvents(undefined, start - 1)[Symbol.asyncIterator]();
    expect((await nextWithin(it)).value?.transitions[0]?.revision).toBe(start);
    await it.return?.(undefined);
  });

  it('refuses a malformed filter naming its field', async () => {
    const store = await open();
    const bad = { states: [], pipeline: '', stage: '', actionKey: 'nope' };
    await expect(store.watchEvents(bad, 0).next()).rejects.toMatchObject({
      field: 'filter.action_key',
    });
    const badState = { states: [77], pipeline: '', stage: '', actionKey: '' };
    await expect(store.watchEvents(badState, 0).next()).rejects.toMatchObject({
      field: 'filter.states[0]',
    });
  });

  it('keeps a duplicate write out of the feed', async () => {
    const store = await open();
    const w = createWrite('a');
    const it = store.watchEvents(undefined, 0)[Symbol.asyncIterator]();
    const first = nextWithin(it);
    await store.submit([w]);
    await store.submit([w]);
    await store.submit([
      write({ taskId: 'a', expectedState: S.TASK_STATE_QUEUED, toState: S.TASK_STATE_CANCELLED }),
    ]);
    expect((await first).value?.transitions).toHaveLength(2);
    expect((await nextWithin(it)).value?.transitions.map((t: Transition) => t.toState)).toEqual([
      S.TASK_STATE_CANCELLED,
    ]);
    await it.return?.(undefined);
  });
});

const SIX = ['a', 'b', 'c', 'd', 'e', 'f'];

/** A store with a 1 MiB reply budget and six RUNNING tasks, SIX. */
async function runningSix(): Promise<StatusStore> {
  const store = await open({ maxReplyBytes: 1024 * 1024 });
  for (const id of SIX) {
    await createTask(store, id);
    await move(store, id, S.TASK_STATE_DISPATCHED);
    await move(store, id, S.TASK_STATE_RUNNING);
  }
  return store;
}

/** Ends SIX in one commit, each with a 300 KiB output: ~1.8 MB of transitions. */
function finishSixLarge(store: StatusStore) {
  const output = { data: Buffer.alloc(300 * 1024), contentType: 'text/plain' };
  return store.submit(
    SIX.map((taskId) =>
      write({
        taskId,
        expectedState: S.TASK_STATE_RUNNING,
        toState: S.TASK_STATE_SUCCEEDED,
        payload: output,
      }),
    ),
  );
}

describe('watch messages under the byte budget', () => {
  it('splits a commit whose transitions pass the budget, live and from the store, resumable inside it', async () => {
    const store = await runningSix();
    const before = store.stats().revision;
    const live = store.watchEvents(undefined, 0)[Symbol.asyncIterator]();
    const first = nextWithin(live);
    const outcomes = await finishSixLarge(store);
    const revisions = outcomes.map((o) => o.revision);
    /** Messages until the commit's last revision, each checked under the budget. */
    const messages = async (it: AsyncIterator<WatchEventsResponse>) => {
      const out: WatchEventsResponse[] = [];
      for (;;) {
        const r = await nextWithin(it);
        if (r.done === true) break;
        out.push(r.value);
        expect(WatchEventsResponse.encode(r.value).finish().length).toBeLessThan(1024 * 1024);
        if (r.value.revision >= revisions[5]!) break;
      }
      await it.return?.(undefined);
      return out;
    };
    const liveMessages = [(await first).value as WatchEventsResponse, ...(await messages(live))];
    const stored = await messages(store.watchEvents(undefined, before)[Symbol.asyncIterator]());
    for (const batches of [liveMessages, stored]) {
      expect(batches.length).toBeGreaterThan(1);
      expect(batches.flatMap((b) => b.transitions.map((t) => t.revision))).toEqual(revisions);
      // A message cut short names its last transition's revision: resuming there loses nothing.
      for (const b of batches.slice(0, -1)) {
        expect(b.revision).toBe(b.transitions[b.transitions.length - 1]?.revision);
      }
      const resumed = await messages(
        store.watchEvents(undefined, batches[0]!.revision)[Symbol.asyncIterator](),
      );
      expect(resumed.flatMap((b) => b.transitions.map((t) => t.revision))).toEqual(
        revisions.slice(batches[0]!.transitions.length),
      );
    }
  });
});

describe('a watch with a transition mask', () => {
  it('sends only the named fields, live and from the store, sized after the mask', async () => {
    const store = await runningSix();
    const before = store.stats().revision;
    const project = compileTransitionMask(['task_id', 'to_state']);
    const live = store.watchEvents(undefined, 0, undefined, '', project)[Symbol.asyncIterator]();
    const first = nextWithin(live);
    // Over the budget unmasked (the test above), one message masked.
    await finishSixLarge(store);
    const stored = store.watchEvents(undefined, before, undefined, '', project);
    for (const message of [
      (await first).value,
      (await nextWithin(stored[Symbol.asyncIterator]())).value,
    ]) {
      expect(message.transitions).toEqual(
        SIX.map((taskId) => Transition.fromPartial({ taskId, toState: S.TASK_STATE_SUCCEEDED })),
      );
      expect(message.revision).toBe(before + SIX.length);
    }
    await live.return?.(undefined);
  });
});

describe("a watch that skips a writer's own transitions", () => {
  it('leaves out transition ids with the prefix, and still reaches the revision of every commit', async () => {
    // Told its revision after every commit it does not receive.
    const store = await open({ watchProgressEvery: 1 });
    await createTask(store, 'first'); // revisions 1, 2: the watch resumes after them
    const it = store.watchEvents(undefined, 2, undefined, 'router-a.')[Symbol.asyncIterator]();
    await createTask(store, 'mine', { transitionId: 'router-a.1' }); // 3, 4
    await createTask(store, 'theirs', { transitionId: 'tracker.1' }); // 5, 6
    await createTask(store, 'mine-too', { transitionId: 'router-a.2' }); // 7, 8
    const seen: [string, number][] = [];
    let revision = 0;
    while (revision < 8) {
      const r = await nextWithin(it);
      if (r.done === true) break;
      seen.push(...r.value.transitions.map((t): [string, number] => [t.taskId, t.revision]));
      revision = r.value.revision;
    }
    expect(seen).toEqual([
      ['theirs', 5],
      ['theirs', 6],
    ]);
    expect(revision).toBe(8);
    await it.return?.(undefined);
  });
});
