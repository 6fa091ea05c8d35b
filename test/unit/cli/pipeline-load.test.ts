import type { Transition } from '../../../gen/dsat/task/v1/task';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { addStageTimes } from '../../../bench/pipeline-load';

const S = TaskState;

/** One transition at `ms` after the epoch; every other field as the feed leaves it empty. */
function t(ms: number, toState: TaskState, stage: string): Transition {
  return {
    revision: 0,
    taskId: 't1',
    seq: 0,
    fromState: S.TASK_STATE_UNSPECIFIED,
    toState,
    stage,
    attempt: 1,
    workerId: '',
    reason: '',
    at: new Date(ms),
    pipeline: 'p',
    traceId: '',
    error: undefined,
    payload: undefined,
    transitionId: '',
    parentTaskId: '',
  };
}

function figures(transitions: Transition[]) {
  const stages = new Map<
    string,
    { tasks: number; attempts: number; queue: number[]; run: number[] }
  >();
  addStageTimes(transitions, stages);
  return Object.fromEntries(stages);
}

describe('stage times of the pipeline bench', () => {
  it('splits each stage into queued and running, up to the next stage or the end', () => {
    expect(
      figures([
        t(100, S.TASK_STATE_SUBMITTED, 'a'),
        t(100, S.TASK_STATE_QUEUED, 'a'),
        t(104, S.TASK_STATE_DISPATCHED, 'a'),
        t(105, S.TASK_STATE_RUNNING, 'a'),
        t(120, S.TASK_STATE_QUEUED, 'b'),
        t(121, S.TASK_STATE_DISPATCHED, 'b'),
        t(123, S.TASK_STATE_RUNNING, 'b'),
        t(150, S.TASK_STATE_SUCCEEDED, 'b'),
      ]),
    ).toEqual({
      a: { tasks: 1, attempts: 1, queue: [5], run: [15] },
      b: { tasks: 1, attempts: 1, queue: [3], run: [27] },
    });
  });

  it('counts a retried stage once, its attempts each, running from the first attempt', () => {
    expect(
      figures([
        t(0, S.TASK_STATE_QUEUED, 'a'),
        t(2, S.TASK_STATE_RUNNING, 'a'),
        t(10, S.TASK_STATE_RETRY_WAIT, 'a'),
        t(30, S.TASK_STATE_QUEUED, 'a'),
        t(31, S.TASK_STATE_RUNNING, 'a'),
        t(40, S.TASK_STATE_DEAD_LETTERED, 'a'),
      ]),
    ).toEqual({ a: { tasks: 1, attempts: 2, queue: [2], run: [38] } });
  });

  it('times a fan-out branch as a task of its own', () => {
    const parent = figures([
      t(0, S.TASK_STATE_QUEUED, 'split'),
      t(1, S.TASK_STATE_RUNNING, 'split'),
      t(5, S.TASK_STATE_QUEUED, 'left'),
      t(6, S.TASK_STATE_RUNNING, 'left'),
      t(20, S.TASK_STATE_SUCCEEDED, 'left'),
    ]);
    const branch = figures([
      t(5, S.TASK_STATE_SUBMITTED, 'right'),
      t(5, S.TASK_STATE_QUEUED, 'right'),
      t(8, S.TASK_STATE_RUNNING, 'right'),
      t(20, S.TASK_STATE_SUCCEEDED, 'right'),
    ]);
    expect({ ...parent, ...branch }).toEqual({
      split: { tasks: 1, attempts: 1, queue: [1], run: [4] },
      left: { tasks: 1, attempts: 1, queue: [1], run: [14] },
      right: { tasks: 1, attempts: 1, queue: [3], run: [12] },
    });
  });
});
