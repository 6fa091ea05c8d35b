import { Decorator } from '../../../gen/dsat/pipeline/v1/pipeline';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { compilePipeline } from '../../../services/router/pipeline-registry';
import { planFailure, planLeaseLost, planRequeue } from '../../../services/router/retry-policy';
import { planPublish, planStageDone } from '../../../services/router/stage-routing';
import { asyncToken, parseAsyncToken } from '../../../services/shared/async-token';
import { pipeline } from '../../helpers/router-mesh';

const S = TaskState;
let n = 0;
const ids = () => `t${++n}`;
const out = { data: Buffer.from('{"x":1}'), contentType: 'application/json' };

const p = compilePipeline({
  ...pipeline('p', [
    { name: 'a', next: ['b', 'c'], maxAttempts: 2, nonRetryable: ['BadInput'] },
    { name: 'b', next: ['d'] },
    { name: 'c', async: true, next: ['d'] },
    { name: 'd', heartbeatTimeoutMs: 1000 },
  ]),
  version: 3,
  maxHops: 3,
});
const at = (stage: string, attempt = 1, hops = 0) => ({
  taskId: 'task-1',
  pipeline: p,
  stage: p.stages.get(stage)!,
  attempt,
  hops,
  progress: undefined,
});

describe('where a finished stage sends its task', () => {
  it('compiles defaults: entry is the first stage, max_attempts 3, and decorators', () => {
    const d = compilePipeline(pipeline('q', [{ name: 'x', maxAttempts: 0 }]));
    expect(d.entry.name).toBe('x');
    expect(d.maxHops).toBe(50);
    expect(d.entry.maxAttempts).toBe(3);
    expect(p.stages.get('c')!.async).toBe(true);
    expect(p.stages.get('d')!.heartbeatTimeoutMs).toBe(1000);
    expect(Decorator.DECORATOR_ASYNC).toBe(2);
  });

  it('a chosen edge: QUEUED at that stage, attempt 1, with the output as input', () => {
    const plan = planStageDone(at('a'), S.TASK_STATE_RUNNING, out, ['b'], 'w1', ids);
    expect(plan.kind).toBe('advanced');
    expect(plan.writes).toHaveLength(1);
    expect(plan.writes[0]).toMatchObject({
      expectedState: S.TASK_STATE_RUNNING,
      expectedAttempt: 1,
      toState: S.TASK_STATE_QUEUED,
      stage: 'b',
      attempt: 1,
      workerId: 'w1',
      reason: 'STAGE_DONE',
      payload: out,
      fanOutStages: [],
    });
    expect(plan.next.map((x) => [x.stage.name, x.hops])).toEqual([['b', 1]]);
  });

  it('no choice with several edges fans out: the first in the write, the rest as fan_out_stages', () => {
    const plan = planStageDone(at('a'), S.TASK_STATE_RUNNING, out, [], '', ids);
    expect(plan.kind).toBe('fanned-out');
    expect(plan.writes[0]).toMatchObject({ stage: 'b', fanOutStages: ['c'] });
  });

  it('an undeclared edge fails the task, naming it', () => {
    const plan = planStageDone(at('a'), S.TASK_STATE_RUNNING, out, ['d'], '', ids);
    expect(plan.kind).toBe('failed');
    expect(plan.writes[0]).toMatchObject({
      toState: S.TASK_STATE_FAILED,
      reason: 'UNDECLARED_NEXT_STAGE',
    });
    expect(plan.writes[0]!.error?.message).toContain('no edge to d');
  });

  it('the last stage succeeds with the output; past max_hops fails with HOP_LIMIT', () => {
    expect(
      planStageDone(at('d', 1, 2), S.TASK_STATE_RUNNING, out, [], '', ids).writes[0],
    ).toMatchObject({
      toState: S.TASK_STATE_SUCCEEDED,
      payload: out,
      reason: 'COMPLETED',
    });
    const plan = planStageDone(at('b', 1, 2), S.TASK_STATE_RUNNING, out, [], '', ids);
    expect(plan.writes[0]).toMatchObject({ toState: S.TASK_STATE_FAILED, reason: 'HOP_LIMIT' });
  });

  it('an ASYNC stage waits with a token that names its attempt; CompleteAsync moves it on', () => {
    const plan = planStageDone(at('c', 2), S.TASK_STATE_RUNNING, out, [], '', ids);
    expect(plan.kind).toBe('waiting');
    expect(plan.writes[0]).toMatchObject({ toState: S.TASK_STATE_WAITING, attempt: 2 });
    expect(parseAsyncToken(plan.writes[0]!.asyncToken)).toEqual({
      taskId: 'task-1',
      stage: 'c',
      attempt: 2,
    });
    const resumed = planStageDone(at('c', 2), S.TASK_STATE_WAITING, out, [], '', ids);
    expect(resumed.writes[0]).toMatchObject({
      expectedState: S.TASK_STATE_WAITING,
      toState: S.TASK_STATE_QUEUED,
      stage: 'd',
      reason: 'ASYNC_COMPLETED',
    });
  });

  it('an ASYNC token is read from its end, so task ids may hold colons; anything else is no token', () => {
    const parts = { taskId: 'orders:eu:7', stage: 'await-payment', attempt: 12 };
    expect(asyncToken(parts)).toBe('orders:eu:7:await-payment:12');
    expect(parseAsyncToken(asyncToken(parts))).toEqual(parts);
    for (const bad of ['', 'a:b', 'a:b:0', 'a:b:x', ':b:1', 'a::1', 'a:b:1:', 'a:b:1234567890']) {
      expect(parseAsyncToken(bad)).toBeUndefined();
    }
  });

  it('a PUBLISH stage moves on from QUEUED and sends no payload (the store republishes its input)', () => {
    const plan = planPublish(at('b'), out, ids);
    expect(plan.writes[0]).toMatchObject({
      expectedState: S.TASK_STATE_QUEUED,
      toState: S.TASK_STATE_QUEUED,
      stage: 'd',
      reason: 'PUBLISHED',
      payload: undefined,
    });
  });
});

describe('what a failed or lost attempt becomes', () => {
  const err = (code: string, retryable = true) => ({
    code,
    message: 'boom',
    retryable,
    details: {},
  });
  it('retryable with attempts left: RETRY_WAIT; spent: DEAD_LETTERED; not retryable or listed: FAILED', () => {
    expect(planFailure(at('a', 1), err('Oops'), 'w', ids).writes[0]!.toState).toBe(
      S.TASK_STATE_RETRY_WAIT,
    );
    expect(planFailure(at('a', 2), err('Oops'), 'w', ids).writes[0]!.toState).toBe(
      S.TASK_STATE_DEAD_LETTERED,
    );
    expect(planFailure(at('a', 1), err('Oops', false), 'w', ids).writes[0]!.toState).toBe(
      S.TASK_STATE_FAILED,
    );
    expect(planFailure(at('a', 1), err('BadInput'), 'w', ids).writes[0]!.toState).toBe(
      S.TASK_STATE_FAILED,
    );
  });

  it('a lost worker: QUEUED with attempt + 1 and the reason, or DEAD_LETTERED; DISPATCHED passes through TIMED_OUT', () => {
    expect(
      planRequeue(at('a', 1), S.TASK_STATE_RUNNING, 'WORKER_LOST', 'w', ids).writes[0],
    ).toMatchObject({
      toState: S.TASK_STATE_QUEUED,
      attempt: 2,
      reason: 'WORKER_LOST',
    });
    expect(
      planRequeue(at('a', 2), S.TASK_STATE_RUNNING, 'WORKER_LOST', 'w', ids).writes.map(
        (w) => w.toState,
      ),
    ).toEqual([S.TASK_STATE_DEAD_LETTERED]);
    expect(
      planRequeue(at('a', 2), S.TASK_STATE_DISPATCHED, 'ROUTER_RESTART', '', ids).writes.map(
        (w) => [w.expectedState, w.toState],
      ),
    ).toEqual([
      [S.TASK_STATE_DISPATCHED, S.TASK_STATE_TIMED_OUT],
      [S.TASK_STATE_TIMED_OUT, S.TASK_STATE_DEAD_LETTERED],
    ]);
  });

  it('a lost lease: TIMED_OUT (HEARTBEAT_TIMEOUT) then RETRY_WAIT in one batch', () => {
    const plan = planLeaseLost(at('d', 1), 'w', ids);
    expect(plan.writes.map((w) => [w.toState, w.reason])).toEqual([
      [S.TASK_STATE_TIMED_OUT, 'HEARTBEAT_TIMEOUT'],
      [S.TASK_STATE_RETRY_WAIT, 'HEARTBEAT_TIMEOUT'],
    ]);
  });
});
