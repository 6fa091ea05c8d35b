import type { WatchEventsResponse } from '../../../gen/dsat/status/v1/status';
import type { Transition } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { Dispatcher } from '../../../services/router/dispatcher';
import { createFeedFollower } from '../../../services/router/feed-follower';
import type { HeldTaskInit } from '../../../services/router/held-task';
import { compilePipeline } from '../../../services/router/pipeline-registry';
import type { PipelineRegistry } from '../../../services/router/pipeline-registry';
import { createTransitionIds } from '../../../services/router/transition-write';
import { AsyncQueue } from '../../../services/shared/async-queue';
import { createLogger } from '../../../services/shared/logger';
import { linear } from '../../helpers/router-mesh';

const pipeline = compilePipeline({ ...linear('p', ['a', 'work']), version: 1 });

const init = (taskId: string, attempt = 1): HeldTaskInit => ({
  taskId,
  pipeline,
  stage: pipeline.stages.get('work')!,
  attempt,
  priority: 0,
  hops: 1,
  traceparent: '',
  input: undefined,
  progress: undefined,
  parentTaskId: '',
});

const queued = (taskId: string, attempt = 1): Transition => ({
  revision: 1,
  taskId,
  seq: 2,
  fromState: TaskState.TASK_STATE_RUNNING,
  toState: TaskState.TASK_STATE_QUEUED,
  stage: 'work',
  attempt,
  workerId: '',
  reason: 'STAGE_DONE',
  at: undefined,
  pipeline: 'p',
  traceId: '',
  error: undefined,
  payload: undefined,
  transitionId: 'other-router.x:1',
  parentTaskId: '',
});

/** A follower over a feed the test writes to, and a dispatcher that records what it holds. */
function setUp() {
  const feed = new AsyncQueue<WatchEventsResponse>();
  const held = new Map<string, HeldTaskInit>();
  const reads: string[] = [];
  const dispatcher = {
    holding: (id: string) => {
      const t = held.get(id);
      return t && { stage: t.stage.name, attempt: t.attempt };
    },
    enqueue: (i: HeldTaskInit) => (held.set(i.taskId, i), true),
    drop: (id: string) => held.delete(id),
  } as unknown as Dispatcher;
  const follower = createFeedFollower({
    watch: () => feed,
    readTask: (id) => (reads.push(id), Promise.resolve(undefined)),
    pipelines: {} as PipelineRegistry,
    dispatcher,
    ids: createTransitionIds('me', 'b00t'),
    serves: (s) => s === 'work',
    logger: createLogger('test', 'silent'),
    rebuild: () => Promise.resolve(0),
    forwardGraceMs: 50,
  });
  follower.start(0);
  const announce = async (...t: Transition[]) => {
    feed.push({ transitions: t, revision: 1 } as WatchEventsResponse);
    await new Promise((r) => setImmediate(r));
  };
  const stop = () => {
    feed.end();
    return follower.stop();
  };
  return { follower, held, reads, announce, stop };
}

describe('a forwarded task waits for the feed to confirm it', () => {
  it('is held at once when the feed announced it first, with no read', async () => {
    const m = setUp();
    await m.announce(queued('t1'));
    expect(m.follower.confirmForward(init('t1'))).toBe(true);
    expect(m.held.get('t1')?.attempt).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(m.reads).toEqual([]);
    await m.stop();
  });

  it('is held when the announcement follows, with no read', async () => {
    const m = setUp();
    expect(m.follower.confirmForward(init('t2'))).toBe(false);
    expect(m.held.has('t2')).toBe(false);
    await m.announce(queued('t2'));
    expect(m.held.get('t2')?.attempt).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(m.reads).toEqual([]);
    await m.stop();
  });

  it('is never held when the feed announces another attempt, or nothing', async () => {
    const m = setUp();
    expect(m.follower.confirmForward(init('t3', 2))).toBe(false);
    expect(m.follower.confirmForward(init('forged'))).toBe(false);
    await m.announce(queued('t3', 1));
    // The feed's own lookup reads the store for attempt 1, as without a forward.
    await new Promise((r) => setTimeout(r, 100));
    expect(m.held.has('t3')).toBe(false);
    expect(m.held.has('forged')).toBe(false);
    expect(m.reads).toEqual(['t3']);
    await m.stop();
  });
});
