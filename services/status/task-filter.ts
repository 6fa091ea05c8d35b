import { TaskState, type TaskFilter } from '../../gen/dsat/task/v1/task';
import { invalidArgument } from '../shared/errors';
import { matchesActionKey, parseActionKey, type ActionKeyPattern } from './action-key';
import { isTaskState } from './task-state-machine';

/** A TaskFilter checked once, then matched against tasks, index entries and feed entries. */
export interface CompiledFilter {
  readonly states: ReadonlySet<TaskState> | undefined;
  readonly pipeline: string;
  readonly stage: string;
  readonly actionKey: ActionKeyPattern | undefined;
}

export const MATCH_ALL: CompiledFilter = {
  states: undefined,
  pipeline: '',
  stage: '',
  actionKey: undefined,
};

/** Throws INVALID_ARGUMENT naming `filter.states[i]` or `filter.action_key`. */
export function compileFilter(filter: TaskFilter | undefined): CompiledFilter {
  if (filter === undefined) return MATCH_ALL;
  filter.states.forEach((s, i) => {
    if (!isTaskState(s) || s === TaskState.TASK_STATE_UNSPECIFIED) {
      throw invalidArgument(`filter.states[${i}]`, `${s} is not a task state`);
    }
  });
  return {
    states: filter.states.length === 0 ? undefined : new Set(filter.states),
    pipeline: filter.pipeline,
    stage: filter.stage,
    actionKey: filter.actionKey === '' ? undefined : parseActionKey(filter.actionKey),
  };
}

export function isEmptyFilter(f: TaskFilter): boolean {
  return f.states.length === 0 && f.pipeline === '' && f.stage === '' && f.actionKey === '';
}

/**
 * Every set field must match; the action key is checked last (it needs the stage's decorators,
 * looked up in the pipeline version the task pinned).
 */
export function filterMatches(
  f: CompiledFilter,
  state: TaskState,
  pipeline: string,
  version: number,
  stage: string,
  decoratorsOf: (pipeline: string, version: number, stage: string) => readonly string[],
): boolean {
  if (f.states !== undefined && !f.states.has(state)) return false;
  if (f.pipeline !== '' && f.pipeline !== pipeline) return false;
  if (f.stage !== '' && f.stage !== stage) return false;
  if (f.actionKey === undefined) return true;
  return matchesActionKey(f.actionKey, {
    client: undefined,
    pipeline,
    decorators: decoratorsOf(pipeline, version, stage),
    stage,
  });
}
