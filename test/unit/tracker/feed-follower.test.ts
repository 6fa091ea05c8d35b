import type { Task, Transition } from '../../../gen/dsat/task/v1/task';
import type {
  FeedBatch,
  FeedSource,
  UnfinishedPage,
} from '../../../services/tracker/feed-follower';
import { followFeed } from '../../../services/tracker/feed-follower';
import type { TaskTimers } from '../../../services/tracker/timers';
import { emptyTask } from '../../helpers/fake-status-store';

class Gap extends Error {}

/** A feed whose watches the test drives: push batches, break the stream, or report a gap. */
function fakeSource(pages: UnfinishedPage[]) {
  const watches: { from: number; push(b: FeedBatch): void; fail(err: Error): void }[] = [];
  let listCalls = 0;
  const source: FeedSource = {
    async listUnfinished(token) {
      listCalls += 1;
      return pages[token === '' ? 0 : Number(token)]!;
    },
    watch(from, signal) {
      const queue: (FeedBatch | Error)[] = [];
      let wake: (() => void) | undefined;
      watches.push({
        from,
        push: (b) => (queue.push(b), wake?.()),
        fail: (e) => (queue.push(e), wake?.()),
      });
      return (async function* () {
        for (;;) {
          const next = queue.shift();
          if (next instanceof Error) throw next;
          if (next) yield next;
          else {
            if (signal.aborted) return;
            await new Promise<void>((r) => {
              wake = r;
              signal.addEventListener('abort', () => r(), { once: true });
            });
          }
        }
      })();
    },
  };
  return { source, watches, lists: () => listCalls };
}

function recordingTimers() {
  const events: string[] = [];
  const timers = {
    prepare: async () => undefined,
    apply: (ts: readonly Transition[]) =>
      events.push(`apply ${ts.map((t) => t.revision).join(',')}`),
    prepareRestore: async () => undefined,
    restore: (tasks: readonly Task[], until: number) =>
      events.push(`restore ${tasks.map((t) => t.taskId).join(',')} until ${until}`),
    observeRevision: (r: number) => events.push(`seen ${r}`),
    reset: () => events.push('reset'),
  } as unknown as TaskTimers;
  return { timers, events };
}

const tr = (revision: number) => ({ revision, taskId: 't' }) as Transition;
const task = (id: string) => emptyTask(id);

describe('the feed follower', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('re-arms from every page, then follows the feed from the FIRST page’s revision', async () => {
    const { source, watches } = fakeSource([
      { tasks: [task('a')], nextPageToken: '1', revision: 10 },
      { tasks: [task('b')], nextPageToken: '', revision: 14 },
    ]);
    const { timers, events } = recordingTimers();
    const abort = new AbortController();
    const f = followFeed({ source, timers, signal: abort.signal });
    await jest.advanceTimersByTimeAsync(0);
    expect(watches.map((w) => w.from)).toEqual([10]);
    expect(f.restored).toBe(true);
    watches[0]!.push({ transitions: [tr(11), tr(12)], revision: 12 });
    await jest.advanceTimersByTimeAsync(0);
    expect(events).toEqual([
      'reset',
      'restore a until 10',
      'restore b until 14',
      'apply 11,12',
      'seen 12',
    ]);
    expect(f.revision).toBe(12);
    abort.abort();
    await f.done;
  });

  it('resumes from the last revision it folded in when the stream breaks, without re-arming', async () => {
    const { source, watches, lists } = fakeSource([{ tasks: [], nextPageToken: '', revision: 5 }]);
    const { timers } = recordingTimers();
    const abort = new AbortController();
    const f = followFeed({ source, timers, signal: abort.signal });
    await jest.advanceTimersByTimeAsync(0);
    watches[0]!.push({ transitions: [tr(6)], revision: 9 });
    watches[0]!.fail(new Error('UNAVAILABLE'));
    await jest.advanceTimersByTimeAsync(100);
    expect(watches.map((w) => w.from)).toEqual([5, 9]);
    expect(lists()).toBe(1);
    abort.abort();
    await f.done;
  });

  it('re-arms from the records when the feed no longer holds its revision', async () => {
    const { source, watches, lists } = fakeSource([
      { tasks: [task('a')], nextPageToken: '', revision: 5 },
    ]);
    const { timers, events } = recordingTimers();
    const abort = new AbortController();
    const f = followFeed({
      source,
      timers,
      signal: abort.signal,
      isFeedGap: (e) => e instanceof Gap,
    });
    await jest.advanceTimersByTimeAsync(0);
    watches[0]!.fail(new Gap());
    await jest.advanceTimersByTimeAsync(100);
    expect(lists()).toBe(2);
    expect(events.filter((e) => e === 'reset')).toHaveLength(2);
    abort.abort();
    await f.done;
  });

  it('keeps trying a store that is down, with capped backoff, until it answers', async () => {
    let up = false;
    let tries = 0;
    const source: FeedSource = {
      async listUnfinished() {
        tries += 1;
        if (!up) throw new Error('UNAVAILABLE');
        return { tasks: [], nextPageToken: '', revision: 1 };
      },
      // eslint-disable-next-line require-yield
      async *watch(_from, signal) {
        await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
      },
    };
    const { timers } = recordingTimers();
    const abort = new AbortController();
    const f = followFeed({ source, timers, signal: abort.signal, maxBackoffMs: 1_000 });
    await jest.advanceTimersByTimeAsync(10_000);
    // 0.1 + 0.2 + 0.4 + 0.8 s, then every second.
    expect(tries).toBeGreaterThanOrEqual(11);
    expect(tries).toBeLessThanOrEqual(14);
    up = true;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(f.restored).toBe(true);
    abort.abort();
    await f.done;
  });
});
