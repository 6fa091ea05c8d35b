import type { AckEntry, Assignment, AttemptRef } from '../../../gen/dsat/router/v1/router';
import type { TransitionOutcome, TransitionWrite } from '../../../gen/dsat/status/v1/status';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { Dispatcher } from '../../../services/router/dispatcher';
import type { HeldTask, HeldTaskInit, WorkerLink } from '../../../services/router/held-task';
import { compilePipeline } from '../../../services/router/pipeline-registry';
import type { OutcomeHandler, StatusWriter } from '../../../services/router/status-writer';
import { createTransitionIds } from '../../../services/router/transition-write';
import { createLogger } from '../../../services/shared/logger';
import { linear } from '../../helpers/router-mesh';

const S = TaskState;
const tick = () => new Promise((r) => setImmediate(r));

/** A status writer that holds every write until the test answers it. */
class FakeWriter implements StatusWriter {
  readonly writes: TransitionWrite[] = [];
  private waiting: { w: TransitionWrite; h?: OutcomeHandler<unknown>; c: unknown }[] = [];
  write<C>(w: TransitionWrite, h?: OutcomeHandler<C>, c?: C): void {
    this.writes.push(w);
    this.waiting.push({ w, h: h as OutcomeHandler<unknown> | undefined, c });
  }
  commit(): Promise<TransitionOutcome[]> {
    throw new Error('not used');
  }
  get pending() {
    return this.waiting.length;
  }
  get pendingBytes() {
    return this.waiting.reduce((n, { w }) => n + (w.payload?.data.length ?? 0), 0);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  withdrawAbandoned(): number {
    return 0;
  }
  /** Answers every waiting write: OK, or what `refuse` says. */
  answer(
    refuse: (w: TransitionWrite) => { code: number; reason: string } | undefined = () => undefined,
  ) {
    const now = this.waiting;
    this.waiting = [];
    for (const { w, h, c } of now) {
      const r = refuse(w);
      h?.(
        {
          transitionId: w.transitionId,
          taskId: w.taskId,
          code: r?.code ?? 0,
          reason: r?.reason ?? '',
          message: '',
          revision: 1,
          seq: 1,
          duplicate: false,
        },
        c,
      );
    }
  }
  to(state: TaskState) {
    return this.writes.filter((w) => w.toState === state);
  }
}

class FakeLink implements WorkerLink {
  credit = 0;
  draining = false;
  readonly holding = new Map<string, HeldTask>();
  readonly assigned: Assignment[] = [];
  readonly cancelled: { ref: AttemptRef; reason: string }[] = [];
  readonly acks: AckEntry[] = [];
  constructor(
    readonly sessionId: string,
    readonly stages: readonly string[] = ['s1'],
  ) {}
  get workerId() {
    return `worker-${this.sessionId}`;
  }
  assign(a: Assignment) {
    this.assigned.push(a);
  }
  flush() {}
  cancel(ref: AttemptRef, reason: string) {
    this.cancelled.push({ ref, reason });
  }
  ack(e: AckEntry) {
    this.acks.push(e);
  }
}

const pipe = compilePipeline({
  ...linear('p', ['s1', 's2'], { heartbeatTimeoutMs: 1000, maxAttempts: 2 }),
  version: 1,
});

function setup() {
  let now = 0;
  const writer = new FakeWriter();
  const d = new Dispatcher({
    writer,
    ids: createTransitionIds('r', 'b'),
    logger: createLogger('test', 'silent'),
    serves: () => true,
    sweepIntervalMs: 0,
    now: () => now,
  });
  const task = (i: number, stage = 's1'): HeldTaskInit => ({
    taskId: `t${i}`,
    pipeline: pipe,
    stage: pipe.stages.get(stage)!,
    attempt: 1,
    priority: 0,
    hops: 0,
    parentTaskId: '',
    traceparent: '',
    input: { data: Buffer.from('{}'), contentType: 'application/json' },
    progress: undefined,
  });
  /** Puts the tasks on `link` and commits their DISPATCHED and RUNNING: they run there. */
  const runOn = async (link: FakeLink, ...inits: HeldTaskInit[]) => {
    d.addLink(link);
    for (const init of inits) d.enqueue(init);
    d.grantCredit(link, inits.length);
    await tick();
    writer.answer();
  };
  return { d, writer, task, runOn, advance: (ms: number) => (now += ms) };
}

describe('the dispatcher', () => {
  it('never assigns more than the credit a stream granted', async () => {
    const { d, task } = setup();
    const link = new FakeLink('a');
    d.addLink(link);
    for (let i = 0; i < 10; i++) d.enqueue(task(i));
    d.grantCredit(link, 2);
    await tick();
    expect(link.assigned.map((a) => a.taskId)).toEqual(['t0', 't1']);
    expect(link.holding.size).toBe(2);
    d.grantCredit(link, 1);
    await tick();
    expect(link.assigned).toHaveLength(3);
    expect(d.load()[0]).toMatchObject({ stage: 's1', queueDepth: 7, inFlight: 3, freeCredit: 0 });
  });

  it('writes DISPATCHED then RUNNING per assignment without waiting, and aborts an attempt the store refused', async () => {
    const { d, writer, task } = setup();
    const link = new FakeLink('a');
    d.addLink(link);
    d.enqueue(task(1));
    d.grantCredit(link, 1);
    await tick();
    expect(writer.writes.map((w) => [w.expectedState, w.toState])).toEqual([
      [S.TASK_STATE_QUEUED, S.TASK_STATE_DISPATCHED],
      [S.TASK_STATE_DISPATCHED, S.TASK_STATE_RUNNING],
    ]);
    writer.answer(() => ({ code: 9, reason: 'STATE_MISMATCH' }));
    expect(link.cancelled).toEqual([
      { ref: { taskId: 't1', attempt: 1 }, reason: 'DISPATCH_REFUSED' },
    ]);
    expect(link.holding.size).toBe(0);
  });

  it('goes round robin over the streams with credit, skipping one that drains', async () => {
    const { d, task } = setup();
    const links = ['a', 'b', 'c', 'x'].map((id) => new FakeLink(id));
    for (const l of links) d.addLink(l);
    for (const l of links) d.grantCredit(l, 100);
    d.drainLink(links[3]!);
    for (let i = 0; i < 31; i++) d.enqueue(task(i));
    await tick();
    expect(links.map((l) => l.assigned.length)).toEqual([11, 10, 10, 0]);
  });

  it('acks a result only once its write is committed, and answers a refusal with the reason', async () => {
    const { d, writer, task, runOn } = setup();
    const link = new FakeLink('a', ['s1', 's2']);
    await runOn(link, task(1), task(2));
    const out = Buffer.from('{"ok":1}');
    d.onResults(link, [
      { taskId: 't1', attempt: 1, output: out, contentType: 'application/json', nextStages: [] },
      { taskId: 't2', attempt: 1, output: out, contentType: 'application/json', nextStages: [] },
    ]);
    expect(link.acks).toHaveLength(0);
    const done = writer.to(S.TASK_STATE_QUEUED);
    expect(done.map((w) => [w.taskId, w.stage])).toEqual([
      ['t1', 's2'],
      ['t2', 's2'],
    ]);
    writer.answer((w) => (w.taskId === 't2' ? { code: 9, reason: 'STATE_MISMATCH' } : undefined));
    expect(link.acks).toEqual([
      { taskId: 't1', attempt: 1, accepted: true, reason: '' },
      { taskId: 't2', attempt: 1, accepted: false, reason: 'STATE_MISMATCH' },
    ]);
    // t1 is now queued at s2 and goes to the same stream once it has credit.
    d.grantCredit(link, 1);
    await tick();
    expect(link.assigned.at(-1)).toMatchObject({ taskId: 't1', stage: 's2', attempt: 1, hops: 1 });
  });

  it('starts the next stage before the move is committed, its writes queued after the move, and calls it off when the move is refused', async () => {
    const { d, writer, task, runOn } = setup();
    const a = new FakeLink('a', ['s1']);
    const b = new FakeLink('b', ['s2']);
    await runOn(a, task(1), task(2), task(3));
    d.addLink(b);
    d.grantCredit(b, 2);
    await tick();
    const sent = writer.writes.length;
    const out = (i: number) => Buffer.from(`{"r":${i}}`);
    d.onResults(
      a,
      [1, 2, 3].map((i) => ({
        taskId: `t${i}`,
        attempt: 1,
        output: out(i),
        contentType: 'application/json',
        nextStages: [],
      })),
    );
    // Nothing is committed yet, and two of the three already run at s2 (b had credit for two).
    expect(a.acks).toHaveLength(0);
    expect(b.assigned.map((x) => [x.taskId, x.stage, x.attempt, x.hops])).toEqual([
      ['t1', 's2', 1, 1],
      ['t2', 's2', 1, 1],
    ]);
    expect(b.assigned[0]!.input?.data).toEqual(out(1));
    // Every move is queued before the dispatches that depend on it: the store applies them in order.
    expect(writer.writes.slice(sent).map((w) => [w.taskId, w.toState])).toEqual([
      ['t1', S.TASK_STATE_QUEUED],
      ['t2', S.TASK_STATE_QUEUED],
      ['t3', S.TASK_STATE_QUEUED],
      ['t1', S.TASK_STATE_DISPATCHED],
      ['t1', S.TASK_STATE_RUNNING],
      ['t2', S.TASK_STATE_DISPATCHED],
      ['t2', S.TASK_STATE_RUNNING],
    ]);
    // The store refuses the moves of t2 and t3 (they were cancelled meanwhile, say), and so t2's dispatch.
    const mismatch = { code: 9, reason: 'STATE_MISMATCH' };
    writer.answer((w) => (w.taskId === 't1' ? undefined : mismatch));
    expect(a.acks).toEqual([
      { taskId: 't1', attempt: 1, accepted: true, reason: '' },
      { taskId: 't2', attempt: 1, accepted: false, reason: 'STATE_MISMATCH' },
      { taskId: 't3', attempt: 1, accepted: false, reason: 'STATE_MISMATCH' },
    ]);
    expect(b.cancelled).toEqual([
      { ref: { taskId: 't2', attempt: 1 }, reason: 'DISPATCH_REFUSED' },
    ]);
    // t3 waited in s2's queue and is gone from it; t1 is not queued a second time by its commit.
    d.grantCredit(b, 5);
    await tick();
    expect(b.assigned.map((x) => x.taskId)).toEqual(['t1', 't2']);
    expect(d.counts()).toMatchObject({ held: 1, queued: 0 });
    expect(d.load().find((l) => l.stage === 's2')).toMatchObject({ queueDepth: 0, inFlight: 1 });
    expect(d.ahead).toEqual({ committed: 1, calledOff: 2 });
  });

  it('never runs the next stage on the stream that still awaits the Ack of the same (task, attempt)', async () => {
    const { d, writer, task, runOn } = setup();
    const a = new FakeLink('a', ['s1', 's2']);
    await runOn(a, task(1), task(2));
    d.grantCredit(a, 2);
    const result = (i: number) => ({
      taskId: `t${i}`,
      attempt: 1,
      output: Buffer.from('{}'),
      contentType: 'application/json',
      nextStages: [],
    });
    d.onResults(a, [result(1)]);
    // The only stream with credit reported t1:1: the next stage waits for the Ack.
    expect(a.assigned.map((x) => [x.taskId, x.stage])).toEqual([
      ['t1', 's1'],
      ['t2', 's1'],
    ]);
    // Another stream of the stage takes it at once.
    const b = new FakeLink('b', ['s1', 's2']);
    d.addLink(b);
    d.grantCredit(b, 1);
    d.onResults(a, [result(2)]);
    expect(b.assigned.map((x) => [x.taskId, x.stage])).toEqual([['t2', 's2']]);
    writer.answer();
    expect(a.acks.map((e) => e.taskId)).toEqual(['t1', 't2']);
    await tick();
    expect(a.assigned.slice(2).map((x) => [x.taskId, x.stage, x.attempt])).toEqual([
      ['t1', 's2', 1],
    ]);
    expect(d.counts()).toMatchObject({ held: 2, queued: 0 });
    expect(d.ahead).toEqual({ committed: 2, calledOff: 0 });
  });

  it('fails a task whose result the store refuses as malformed, instead of leaving it RUNNING', async () => {
    const { d, writer, task, runOn } = setup();
    const link = new FakeLink('a');
    await runOn(link, task(1));
    const out = Buffer.from('{}');
    d.onResults(link, [
      { taskId: 't1', attempt: 1, output: out, contentType: 'application/json', nextStages: [] },
    ]);
    writer.answer(() => ({ code: 3, reason: 'INVALID_FIELD' }));
    expect(link.acks).toHaveLength(0);
    expect(writer.to(S.TASK_STATE_FAILED)).toMatchObject([
      {
        taskId: 't1',
        expectedState: S.TASK_STATE_RUNNING,
        reason: 'RESULT_REFUSED',
        error: { code: 'RESULT_REFUSED' },
      },
    ]);
    writer.answer();
    expect(link.acks).toEqual([{ taskId: 't1', attempt: 1, accepted: true, reason: '' }]);
  });

  it('requeues the running attempts of a stream that broke, as attempt + 1, to another stream', async () => {
    const { d, writer, task } = setup();
    const a = new FakeLink('a');
    const b = new FakeLink('b');
    d.addLink(a);
    d.grantCredit(a, 3);
    for (let i = 0; i < 3; i++) d.enqueue(task(i));
    await tick();
    writer.answer();
    d.addLink(b);
    d.grantCredit(b, 10);
    d.removeLink(a);
    const requeues = writer.to(S.TASK_STATE_QUEUED);
    expect(requeues.map((w) => [w.taskId, w.expectedAttempt, w.attempt, w.reason])).toEqual([
      ['t0', 1, 2, 'WORKER_LOST'],
      ['t1', 1, 2, 'WORKER_LOST'],
      ['t2', 1, 2, 'WORKER_LOST'],
    ]);
    await tick();
    expect(b.assigned.map((x) => [x.taskId, x.attempt])).toEqual([
      ['t0', 2],
      ['t1', 2],
      ['t2', 2],
    ]);
    // Attempt 2 was the last one: a second loss dead-letters.
    writer.answer();
    d.removeLink(b);
    expect(writer.to(S.TASK_STATE_DEAD_LETTERED)).toHaveLength(3);
  });

  it('enforces the heartbeat timeout: TIMED_OUT + RETRY_WAIT, and the worker is told LEASE_LOST', async () => {
    const { d, writer, task, advance } = setup();
    const link = new FakeLink('a');
    d.addLink(link);
    d.grantCredit(link, 2);
    d.enqueue(task(1));
    d.enqueue(task(2));
    await tick();
    writer.answer();
    advance(800);
    d.onHeartbeats(link, [{ taskId: 't2', attempt: 1, progress: undefined }]);
    advance(400);
    d.sweep();
    expect(writer.writes.slice(-2).map((w) => [w.taskId, w.toState, w.reason])).toEqual([
      ['t1', S.TASK_STATE_TIMED_OUT, 'HEARTBEAT_TIMEOUT'],
      ['t1', S.TASK_STATE_RETRY_WAIT, 'HEARTBEAT_TIMEOUT'],
    ]);
    expect(link.cancelled).toEqual([{ ref: { taskId: 't1', attempt: 1 }, reason: 'LEASE_LOST' }]);
    expect([...link.holding.values()].map((t) => t.taskId)).toEqual(['t2']);
    // The late result of the lost attempt is refused.
    d.onResults(link, [
      {
        taskId: 't1',
        attempt: 1,
        output: Buffer.from('1'),
        contentType: 'application/json',
        nextStages: [],
      },
    ]);
    expect(link.acks.at(-1)).toMatchObject({ taskId: 't1', accepted: false, reason: 'LEASE_LOST' });
  });
});
