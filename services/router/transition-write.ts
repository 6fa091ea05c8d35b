import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Payload, TaskError, TaskProgress } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';

/** The fields a router sets on a write; the rest default to empty. */
export interface WriteFields {
  readonly transitionId: string;
  readonly taskId: string;
  readonly expectedState: TaskState;
  /** 0 skips the attempt check. */
  readonly expectedAttempt: number;
  readonly toState: TaskState;
  /** The stage after the write; '' keeps the current one. */
  readonly stage?: string;
  /** The attempt after the write; 0 lets the store derive it. */
  readonly attempt?: number;
  readonly workerId?: string;
  readonly reason?: string;
  readonly error?: TaskError;
  readonly payload?: Payload;
  readonly progress?: TaskProgress;
  readonly branchId?: string;
  readonly asyncToken?: string;
  readonly fanOutStages?: string[];
}

/** A complete TransitionWrite, every field spelled out so that each has the same shape. */
export function transitionWrite(f: WriteFields): TransitionWrite {
  return {
    transitionId: f.transitionId,
    taskId: f.taskId,
    expectedState: f.expectedState,
    expectedAttempt: f.expectedAttempt,
    toState: f.toState,
    stage: f.stage ?? '',
    attempt: f.attempt ?? 0,
    workerId: f.workerId ?? '',
    reason: f.reason ?? '',
    error: f.error,
    payload: f.payload,
    progress: f.progress,
    create: undefined,
    branchId: f.branchId ?? '',
    asyncToken: f.asyncToken ?? '',
    fanOutStages: f.fanOutStages ?? [],
  };
}

/**
 * Transition identifiers of one router process: `<router_id>.<boot>:<counter>`. The boot nonce
 * keeps a restarted router with a fixed id from reusing an identifier, which the store would
 * answer as a repeat of the old write instead of applying it.
 */
export interface TransitionIds {
  /** The prefix of every identifier this process makes: its own transitions on the feed. */
  readonly prefix: string;
  next(): string;
  isOwn(transitionId: string): boolean;
}

export function createTransitionIds(routerId: string, boot: string): TransitionIds {
  const prefix = `${routerId}.${boot}:`;
  let n = 0;
  return {
    prefix,
    next: () => prefix + (++n).toString(36),
    isOwn: (id) => id.startsWith(prefix),
  };
}

export const TERMINAL = new Set<TaskState>([
  TaskState.TASK_STATE_SUCCEEDED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_DEAD_LETTERED,
  TaskState.TASK_STATE_CANCELLED,
]);

export function stateName(state: TaskState): string {
  return (TaskState[state] ?? String(state)).replace(/^TASK_STATE_/, '');
}
