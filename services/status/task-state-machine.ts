import { TaskState } from '../../gen/dsat/task/v1/task';
import { failedPrecondition } from '../shared/errors';

/**
 * How a legal transition moves the task's stage and attempt. The store derives the resulting
 * stage and attempt from the move, so a writer cannot smuggle an attempt reset into a retry.
 *
 * - `create`: the create write (SUBMITTED then QUEUED at the entry stage, attempt 1).
 * - `stay`: same stage, same attempt.
 * - `advance`: the stage is done; the task moves to another stage with attempt 1 and a new input.
 * - `retry`: same stage, attempt + 1; the write must give a reason (durability contract 3).
 * - `redrive`: same stage, attempt back to 1 (an operator's fresh start after a dead letter).
 * - `finish`: the task ends SUCCEEDED at its current stage, which counts as passed.
 */
export type Move = 'create' | 'stay' | 'advance' | 'retry' | 'redrive' | 'finish';

export interface TransitionRule {
  readonly from: TaskState;
  readonly to: TaskState;
  /** The moves this edge allows; `advance` and `retry` share RUNNING→QUEUED, told apart by stage. */
  readonly moves: readonly Move[];
  readonly why: string;
}

const {
  TASK_STATE_UNSPECIFIED: NONE,
  TASK_STATE_SUBMITTED: SUBMITTED,
  TASK_STATE_QUEUED: QUEUED,
  TASK_STATE_DISPATCHED: DISPATCHED,
  TASK_STATE_RUNNING: RUNNING,
  TASK_STATE_RETRY_WAIT: RETRY_WAIT,
  TASK_STATE_WAITING: WAITING,
  TASK_STATE_TIMED_OUT: TIMED_OUT,
  TASK_STATE_SUCCEEDED: SUCCEEDED,
  TASK_STATE_FAILED: FAILED,
  TASK_STATE_DEAD_LETTERED: DEAD_LETTERED,
  TASK_STATE_CANCELLED: CANCELLED,
} = TaskState;

type Row = readonly [from: TaskState, to: TaskState, moves: readonly Move[], why: string];

/**
 * THE table of legal transitions. Anything not listed is refused with ILLEGAL_TRANSITION.
 * SUBMITTED never rests: the create write records SUBMITTED and QUEUED in the same commit, so no
 * other write can find a task in it (hence no SUBMITTED→CANCELLED).
 */
const TABLE: readonly Row[] = [
  [NONE, SUBMITTED, ['create'], 'a router accepted the task; stored together with its QUEUED'],
  [SUBMITTED, QUEUED, ['create'], 'the create write queues the task at its entry stage'],

  [QUEUED, DISPATCHED, ['stay'], 'the router sent the task to a worker with free credit'],
  [QUEUED, QUEUED, ['advance'], 'a PUBLISH stage published its payload and moved on, no worker'],
  [QUEUED, SUCCEEDED, ['finish'], 'a PUBLISH last stage published and ended the task, no worker'],
  [QUEUED, FAILED, ['stay'], 'a PUBLISH stage hit the hop limit or an undeclared edge, no worker'],
  [QUEUED, TIMED_OUT, ['stay'], 'the queue (schedule-to-start) timeout expired'],
  [QUEUED, CANCELLED, ['stay'], 'a client cancelled the task while it waited for a worker'],

  [DISPATCHED, RUNNING, ['stay'], 'the worker started the handler'],
  [DISPATCHED, QUEUED, ['retry'], 'the worker was lost before starting: requeued as attempt+1'],
  [DISPATCHED, TIMED_OUT, ['stay'], 'the worker never started the task within its deadline'],
  [DISPATCHED, CANCELLED, ['stay'], 'a client cancelled the task in flight to a worker'],

  [RUNNING, RUNNING, ['stay'], 'a heartbeat progress checkpoint (stored every few seconds)'],
  [RUNNING, QUEUED, ['advance', 'retry'], 'stage done → next stage; or worker lost → attempt+1'],
  [RUNNING, SUCCEEDED, ['finish'], 'the last stage finished with the final output'],
  [RUNNING, RETRY_WAIT, ['stay'], 'a retryable failure waits out its backoff'],
  [RUNNING, FAILED, ['stay'], 'a non-retryable error, the hop limit or an undeclared edge'],
  [RUNNING, DEAD_LETTERED, ['stay'], 'a failure with the stage attempts spent'],
  [RUNNING, WAITING, ['stay'], 'an ASYNC stage handler returned; waits for CompleteAsync'],
  [RUNNING, TIMED_OUT, ['stay'], 'the run or heartbeat timeout expired'],
  [RUNNING, CANCELLED, ['stay'], 'a client cancelled the running task'],

  [RETRY_WAIT, QUEUED, ['retry'], 'the backoff elapsed: the next attempt is queued'],
  [RETRY_WAIT, CANCELLED, ['stay'], 'a client cancelled the task during its backoff'],

  [WAITING, QUEUED, ['advance'], 'CompleteAsync resumed the task at its next stage'],
  [WAITING, SUCCEEDED, ['finish'], 'CompleteAsync completed an ASYNC last stage'],
  [WAITING, FAILED, ['stay'], 'CompleteAsync reported a non-retryable error or undeclared edge'],
  [WAITING, TIMED_OUT, ['stay'], 'the async deadline passed without CompleteAsync'],
  [WAITING, CANCELLED, ['stay'], 'a client cancelled the waiting task'],

  [TIMED_OUT, RETRY_WAIT, ['stay'], 'the tracker retries the timed-out stage after a backoff'],
  [TIMED_OUT, QUEUED, ['retry'], 'the tracker retries the timed-out stage at once, attempt+1'],
  [TIMED_OUT, DEAD_LETTERED, ['stay'], 'the timeout spent the last attempt'],
  [TIMED_OUT, FAILED, ['stay'], 'the stage does not retry this timeout'],
  [TIMED_OUT, CANCELLED, ['stay'], 'a client cancelled the timed-out task'],

  [DEAD_LETTERED, QUEUED, ['redrive'], 'RedriveTasks queues it again with fresh attempts'],
];

/** Every TaskState a task can be in (UNRECOGNIZED excluded). */
export const ALL_TASK_STATES: readonly TaskState[] = [
  NONE,
  SUBMITTED,
  QUEUED,
  DISPATCHED,
  RUNNING,
  RETRY_WAIT,
  WAITING,
  TIMED_OUT,
  SUCCEEDED,
  FAILED,
  DEAD_LETTERED,
  CANCELLED,
];

/** DEAD_LETTERED is terminal too, except that a redrive may queue it again. */
export const TERMINAL_STATES: readonly TaskState[] = [SUCCEEDED, FAILED, DEAD_LETTERED, CANCELLED];

const terminal = new Set<TaskState>(TERMINAL_STATES);

/** Indexed [from][to] so that the check on every write is two array reads. */
const lookup: (TransitionRule | undefined)[][] = ALL_TASK_STATES.map(() =>
  ALL_TASK_STATES.map(() => undefined),
);
for (const [from, to, moves, why] of TABLE) {
  const row = lookup[from];
  if (row === undefined || row[to] !== undefined)
    throw new Error(`bad transition table row ${from}→${to}`);
  row[to] = Object.freeze({ from, to, moves, why });
}

/** The legal transitions, in table order. */
export const TRANSITION_RULES: readonly TransitionRule[] = TABLE.map(
  ([from, to]) => lookup[from]?.[to] as TransitionRule,
);

export function isTerminalState(state: TaskState): boolean {
  return terminal.has(state);
}

/** The rule for `from → to`, or undefined when the state machine forbids it. */
export function transitionRule(from: TaskState, to: TaskState): TransitionRule | undefined {
  return lookup[from]?.[to];
}

/** The rule for `from → to`; throws FAILED_PRECONDITION `ILLEGAL_TRANSITION` when forbidden. */
export function checkTransition(from: TaskState, to: TaskState): TransitionRule {
  const rule = lookup[from]?.[to];
  if (rule === undefined) {
    throw failedPrecondition(
      'ILLEGAL_TRANSITION',
      `the state machine forbids ${stateName(from)} → ${stateName(to)}`,
      { from_state: stateName(from), to_state: stateName(to) },
    );
  }
  return rule;
}

/** `QUEUED` for TASK_STATE_QUEUED; the number for values outside the enum. */
export function stateName(state: TaskState): string {
  return STATE_NAMES[state] ?? String(state);
}

const STATE_NAMES: readonly string[] = ALL_TASK_STATES.map((s) =>
  (TaskState[s] as string).replace(/^TASK_STATE_/, ''),
);

export function isTaskState(value: number): value is TaskState {
  return Number.isInteger(value) && value >= NONE && value <= CANCELLED;
}
