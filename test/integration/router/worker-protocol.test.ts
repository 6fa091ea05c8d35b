import { Status } from 'nice-grpc-common';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import { RawWorker } from '../../helpers/raw-worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

describe('the worker stream protocol', () => {
  let mesh: RouterMesh;
  const raws: RawWorker[] = [];
  afterEach(async () => {
    for (const r of raws.splice(0)) r.close();
    await mesh?.stop();
  });
  const raw = () => {
    const r = new RawWorker(mesh.router.address);
    raws.push(r);
    return r;
  };

  it('T25: never holds more tasks than the credit granted, and a worker that stops reading gets nothing more', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('one', ['work']));
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const ids = await Promise.all(
      Array.from({ length: 100 }, (_, i) => client.submit('one', { i }).then((r) => r.taskId)),
    );
    const w = raw();
    w.hello('w-credit', ['work'], 4);
    await w.until(() => w.welcome !== undefined, 5_000, 'welcome');
    w.credit(4);
    let reported = 0;
    let maxHeld = 0;
    // Work through all 100 tasks four at a time: report, re-grant, check the bound each time.
    while (reported < 100) {
      await w.until(() => w.assigned.length > reported, 10_000, 'assignment');
      const held = w.assigned.length - reported;
      maxHeld = Math.max(maxHeld, held);
      expect(held).toBeLessThanOrEqual(4);
      const a = w.assigned[reported]!;
      w.result(a, '{"ok":true}');
      reported++;
      w.credit(1);
    }
    expect(maxHeld).toBe(4);
    await w.until(() => w.acks.length === 100, 10_000, 'acks');
    expect(w.acks.every((a) => a.accepted)).toBe(true);
    expect(new Set(w.assigned.map((a) => a.taskId))).toEqual(new Set(ids));

    // A worker that grants 4 and then stops reading: the router sends 4 and holds the rest.
    w.close();
    await eventually(() => mesh.router.dispatcher.counts().links === 0, 5_000, 'stream gone');
    await Promise.all(Array.from({ length: 100 }, (_, i) => client.submit('one', { i })));
    const stuck = raw();
    stuck.hello('w-stuck', ['work'], 4);
    await stuck.until(() => stuck.welcome !== undefined, 5_000, 'welcome');
    stuck.call.pause();
    stuck.credit(4);
    const load = await eventually(async () => {
      const l = (await mesh.router.dispatcher.load()).find((s) => s.stage === 'work');
      return l && l.inFlight === 4 ? l : undefined;
    });
    expect(load.queueDepth).toBe(96);
    // Time passes; nothing more is sent on that stream, whatever the socket would take.
    await new Promise((r) => setTimeout(r, 500));
    const later = mesh.router.dispatcher.load().find((s) => s.stage === 'work')!;
    expect({ inFlight: later.inFlight, queueDepth: later.queueDepth }).toEqual({
      inFlight: 4,
      queueDepth: 96,
    });
    // What went over the wire: read again, exactly the 4 granted arrive, and nothing after them.
    stuck.call.resume();
    await stuck.until(() => stuck.assigned.length >= 4, 10_000, 'the four granted');
    await new Promise((r) => setTimeout(r, 300));
    expect(stuck.assigned).toHaveLength(4);
    stuck.close();
    client.close();
  });

  it('takes credit that rides with a Results message as a Credit that follows it', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('one', ['work']));
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    await Promise.all(Array.from({ length: 10 }, (_, i) => client.submit('one', { i })));
    const w = raw();
    w.hello('w-piggyback', ['work'], 4);
    await w.until(() => w.welcome !== undefined, 5_000, 'welcome');
    w.credit(1);
    await w.until(() => w.assigned.length === 1, 10_000, 'first assignment');
    w.result(w.assigned[0]!, '{"ok":true}', [], 3);
    await w.until(() => w.assigned.length === 4, 10_000, 'three more assignments');
    await w.until(() => w.acks.length === 1, 10_000, 'ack');
    // Credit 1 + 3, four tasks assigned, one reported: three held and nothing more sent.
    await new Promise((r) => setTimeout(r, 300));
    expect(w.assigned).toHaveLength(4);
    const load = mesh.router.dispatcher.load().find((s) => s.stage === 'work')!;
    expect({ inFlight: load.inFlight, queueDepth: load.queueDepth }).toEqual({
      inFlight: 3,
      queueDepth: 6,
    });
    client.close();
  });

  it('T13: a repeated Result gets OK again, and the task SUCCEEDED once', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('one', ['work']));
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('one', { x: 1 });
    const w = raw();
    w.hello('w-dup', ['work'], 1);
    w.credit(1);
    await w.until(() => w.assigned.length === 1, 5_000, 'assignment');
    const a = w.assigned[0]!;
    // Twice in a row, before the first is durable, then once more after its ack.
    w.result(a, '{"n":1}');
    w.result(a, '{"n":1}');
    await w.until(() => w.acks.length === 2, 5_000, 'two acks');
    w.result(a, '{"n":1}');
    await w.until(() => w.acks.length === 3, 5_000, 'third ack');
    expect(w.acks.map((x) => x.accepted)).toEqual([true, true, true]);
    expect(await client.result(taskId)).toEqual({ n: 1 });
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history.filter((t) => t.toState === TaskState.TASK_STATE_SUCCEEDED)).toHaveLength(1);
    const load = mesh.router.dispatcher.load().find((s) => s.stage === 'work')!;
    expect(load.completed).toBe(1);
    client.close();
  });

  it('T14: a result of a stale attempt is refused and changes nothing', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('one', ['work']));
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const { taskId } = await client.submit('one', { x: 1 });
    const first = raw();
    first.hello('w-first', ['work'], 1);
    first.credit(1);
    await first.until(() => first.assigned.length === 1, 5_000, 'assignment');
    expect(first.assigned[0]!.attempt).toBe(1);
    first.close(); // the stream breaks: attempt 1 is requeued as attempt 2 (WORKER_LOST)
    const second = raw();
    second.hello('w-second', ['work'], 1);
    second.credit(1);
    await second.until(() => second.assigned.length === 1, 5_000, 'attempt 2');
    const a2 = second.assigned[0]!;
    expect(a2.attempt).toBe(2);
    second.result(a2, '{"attempt":2}');
    await second.until(() => second.acks.length === 1, 5_000, 'ack');
    expect(second.acks[0]!.accepted).toBe(true);
    const before = await mesh.task(taskId);
    expect(before.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const stale = mesh.router.dispatcher.staleReports;
    // Replay attempt 1's result on the live stream.
    second.result({ taskId, attempt: 1 }, '{"attempt":1}');
    await second.until(() => second.acks.length === 2, 5_000, 'refusal');
    expect(second.acks[1]).toMatchObject({
      taskId,
      attempt: 1,
      accepted: false,
      reason: 'STALE_ATTEMPT',
    });
    expect(mesh.router.dispatcher.staleReports).toBe(stale + 1);
    const after = await mesh.task(taskId);
    expect({ state: after.state, seq: after.seq, output: after.output }).toEqual({
      state: before.state,
      seq: before.seq,
      output: before.output,
    });
    const history = (await mesh.status.getTaskHistory({ taskId })).transitions;
    expect(history.filter((t) => t.reason === 'WORKER_LOST')).toHaveLength(1);
    // The store fences the same way: a write naming attempt 1 is FAILED_PRECONDITION.
    const { outcomes } = await mesh.status.commitTransitions({
      writes: [
        {
          transitionId: `replay-${taskId}`,
          taskId,
          expectedState: TaskState.TASK_STATE_RUNNING,
          expectedAttempt: 1,
          toState: TaskState.TASK_STATE_SUCCEEDED,
        },
      ],
    });
    expect(outcomes[0]).toMatchObject({
      code: Status.FAILED_PRECONDITION,
      reason: 'STALE_ATTEMPT',
    });
    client.close();
  });

  it('refuses a bad Hello naming the field, and a version it does not speak', async () => {
    mesh = await startRouterMesh({ router: { stages: 'work' } });
    const r1 = raw();
    r1.credit(1);
    await r1.ended;
    expect(r1.status?.code).toBe(Status.INVALID_ARGUMENT);
    expect(r1.status?.details).toContain('hello');
    const r2 = raw();
    r2.hello('w', ['other-stage'], 1);
    await r2.ended;
    expect(r2.status?.code).toBe(Status.INVALID_ARGUMENT);
    expect(r2.status?.details).toContain('hello.stages');
    const r3 = raw();
    r3.hello('w', ['work'], 1, 2);
    await r3.ended;
    expect(r3.status?.code).toBe(Status.FAILED_PRECONDITION);
    expect(r3.status?.details).toContain('hello.protocol_version');
    const r4 = raw();
    r4.hello('', ['work'], 1);
    await r4.ended;
    expect(r4.status?.details).toContain('hello.worker_id');
    const r5 = raw();
    r5.hello('w', ['work'], 0);
    await r5.ended;
    expect(r5.status?.details).toContain('hello.concurrency');
  });
});
