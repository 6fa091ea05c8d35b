import type { Assignment } from '../../gen/dsat/router/v1/router';
import type { Task } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { checkContentType } from '../shared/content-types';
import { DsatError, invalidArgument, notFound } from '../shared/errors';
import { traceIdOf } from '../shared/traceparent';
import { NAME_PATTERN as NAME } from '../shared/pipeline-validation';
import { checkTaskId } from '../shared/task-id';
import { progressViolation } from '../shared/task-limits';
import type { Dispatcher } from './dispatcher';
import type { HeldTaskInit } from './held-task';
import type { CompiledPipeline, PipelineRegistry } from './pipeline-registry';
import { checkPayloadSize, checkPriority } from './task-intake';
import { stateName } from './transition-write';

export interface ForwardIntakeOptions {
  readonly dispatcher: Dispatcher;
  readonly pipelines: PipelineRegistry;
  readonly serves: (stage: string) => boolean;
  readonly maxPayloadSize: number;
  readonly readTask: (taskId: string) => Promise<Task | undefined>;
  /** Holds a forwarded task once the feed has announced it (FeedFollower.confirmForward). */
  readonly confirm: (init: HeldTaskInit) => boolean;
}

/**
 * ForwardTasks: tasks another router committed QUEUED at a stage this one serves. Every entry is
 * checked before any is taken, each problem an INVALID_ARGUMENT naming `tasks[i].<field>`.
 *
 * A forward only saves the wait for the feed; it is not the store's word. A task this router does
 * not hold is held once the feed has announced it QUEUED at that stage and attempt (at once when
 * it already has; the forward usually races the announcement), so a forged or stale forward never
 * reaches a worker, at no extra read. A forward that would replace an attempt this router holds is
 * rare (the feed normally says so first), and is checked with one GetTask: the task must be QUEUED
 * there at that attempt, else FAILED_PRECONDITION and the held attempt runs on.
 *
 * Returns the ids now held at the forwarded stage and attempt; the others wait for the feed.
 */
export async function takeForwarded(
  options: ForwardIntakeOptions,
  tasks: readonly Assignment[],
): Promise<string[]> {
  const ids = new Set<string>();
  tasks.forEach((a, i) => {
    checkEntry(options, a, `tasks[${i}]`);
    if (ids.has(a.taskId)) throw invalidArgument(`tasks[${i}].task_id`, 'is forwarded twice');
    ids.add(a.taskId);
  });
  const inits = await Promise.all(tasks.map((a, i) => resolve(options, a, `tasks[${i}]`)));
  const confirmed = await Promise.all(
    inits.map(async (init, i) => {
      if (!replacesHeld(options.dispatcher, init)) return false;
      checkStored(await options.readTask(init.taskId), init, `tasks[${i}]`);
      return true;
    }),
  );
  const taken: string[] = [];
  inits.forEach((init, i) => {
    const held = options.dispatcher.holding(init.taskId);
    if (held !== undefined && held.stage === init.stage.name && held.attempt >= init.attempt) {
      // Held already (the feed was first), or at a newer attempt the forward had not seen.
      if (held.attempt === init.attempt) taken.push(init.taskId);
    } else if (confirmed[i]) {
      options.dispatcher.enqueue(init);
      taken.push(init.taskId);
    } else if (options.confirm(init)) {
      taken.push(init.taskId);
    }
  });
  return taken;
}

/** True when this router holds the task at another stage or an older attempt. */
function replacesHeld(dispatcher: Dispatcher, init: HeldTaskInit): boolean {
  const held = dispatcher.holding(init.taskId);
  return held !== undefined && (held.stage !== init.stage.name || held.attempt < init.attempt);
}

/** What an entry says on its own, before the pipeline is looked up. */
function checkEntry(options: ForwardIntakeOptions, a: Assignment, at: string): void {
  checkTaskId(a.taskId, `${at}.task_id`);
  if (!NAME.test(a.stage)) throw invalidArgument(`${at}.stage`, 'is not a stage name');
  if (!options.serves(a.stage)) {
    throw new DsatError(
      'INVALID_ARGUMENT',
      'STAGE_NOT_SERVED',
      `${at}.stage: this router does not serve stage ${a.stage}`,
      { field: `${at}.stage`, metadata: { stage: a.stage } },
    );
  }
  if (a.attempt < 1) throw invalidArgument(`${at}.attempt`, 'must be at least 1');
  if (!NAME.test(a.pipeline)) throw invalidArgument(`${at}.pipeline`, 'is not a pipeline name');
  if (a.pipelineVersion < 1) throw invalidArgument(`${at}.pipeline_version`, 'must be at least 1');
  checkPriority(a.priority, `${at}.priority`);
  if (a.traceparent !== '' && traceIdOf(a.traceparent) === undefined) {
    throw invalidArgument(`${at}.traceparent`, 'is not a W3C traceparent');
  }
  if (a.parentTaskId !== '') checkTaskId(a.parentTaskId, `${at}.parent_task_id`);
  if (a.input !== undefined) {
    checkContentType(a.input.contentType, `${at}.input.content_type`);
    checkPayloadSize(a.input.data.length, options.maxPayloadSize, `${at}.input`);
  }
  if (a.progress !== undefined) {
    const bad = progressViolation(a.progress, `${at}.progress`);
    if (bad !== undefined) throw invalidArgument(bad.field, bad.description);
  }
}

/** The entry as a task to hold, checked against its pipeline version. */
async function resolve(
  options: ForwardIntakeOptions,
  a: Assignment,
  at: string,
): Promise<HeldTaskInit> {
  let pipeline: CompiledPipeline;
  try {
    pipeline = await options.pipelines.version(a.pipeline, a.pipelineVersion);
  } catch (err) {
    if (err instanceof DsatError && err.kind === 'NOT_FOUND') {
      throw new DsatError('NOT_FOUND', err.reason, `${at}: ${err.message}`, {
        field: `${at}.${err.field ?? 'pipeline'}`,
        metadata: err.metadata,
      });
    }
    throw err;
  }
  const stage = pipeline.stages.get(a.stage);
  if (stage === undefined) {
    throw invalidArgument(
      `${at}.stage`,
      `pipeline ${pipeline.name} v${pipeline.version} has no stage ${a.stage}`,
    );
  }
  if (a.attempt > stage.maxAttempts) {
    throw invalidArgument(
      `${at}.attempt`,
      `must be from 1 to the stage's max_attempts (${stage.maxAttempts}), not ${a.attempt}`,
    );
  }
  // A move that reaches max_hops fails the task instead (HOP_LIMIT): a queued task is below it.
  if (a.hops >= pipeline.maxHops) {
    throw invalidArgument(
      `${at}.hops`,
      `must be less than the pipeline's max_hops (${pipeline.maxHops}), not ${a.hops}`,
    );
  }
  return {
    taskId: a.taskId,
    pipeline,
    stage,
    attempt: a.attempt,
    priority: a.priority,
    hops: a.hops,
    traceparent: a.traceparent,
    input: a.input,
    progress: a.progress,
    parentTaskId: a.parentTaskId,
  };
}

/** The store must have the task QUEUED at the forwarded stage and attempt. */
function checkStored(task: Task | undefined, init: HeldTaskInit, at: string): void {
  if (task === undefined) throw notFound('task', init.taskId, `${at}.task_id`);
  if (
    task.state === TaskState.TASK_STATE_QUEUED &&
    task.stage === init.stage.name &&
    task.attempt === init.attempt
  ) {
    return;
  }
  throw new DsatError(
    'FAILED_PRECONDITION',
    'FORWARD_STALE',
    `${at}: task ${init.taskId} is ${stateName(task.state)} at stage ${task.stage}, attempt ${task.attempt}, not QUEUED at stage ${init.stage.name}, attempt ${init.attempt}`,
    {
      field: `${at}.attempt`,
      metadata: { task_id: init.taskId, state: stateName(task.state) },
    },
  );
}
