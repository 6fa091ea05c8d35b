import type { TransitionWrite } from '../../gen/dsat/status/v1/status';
import { TaskState, type Payload } from '../../gen/dsat/task/v1/task';
import { DsatError, invalidArgument, type FieldViolation } from '../shared/errors';
import { NAME_PATTERN as NAME } from '../shared/pipeline-validation';
import { checkTaskId } from '../shared/task-id';
import { contentTypeViolation, errorViolation, progressViolation } from '../shared/task-limits';
import { isTraceparent } from './task-log';
import { isTaskState, stateName, type Move } from './task-state-machine';

const REASON = /^[A-Z][A-Z0-9_]{0,63}$/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * The shape of a write, before the store looks at the task. Throws INVALID_ARGUMENT, or
 * RESOURCE_EXHAUSTED for a payload over `maxPayloadBytes`.
 */
export function validateWrite(w: TransitionWrite, maxPayloadBytes = Number.MAX_SAFE_INTEGER): void {
  if (w.transitionId === '' || w.transitionId.length > 128) {
    throw invalidArgument('transition_id', 'must be 1 to 128 characters');
  }
  checkTaskId(w.taskId);
  if (!isTaskState(w.toState) || w.toState === TaskState.TASK_STATE_UNSPECIFIED) {
    throw invalidArgument('to_state', `${w.toState} is not a task state`);
  }
  if (!isTaskState(w.expectedState)) {
    throw invalidArgument('expected_state', `${w.expectedState} is not a task state`);
  }
  if (w.stage !== '' && !NAME.test(w.stage)) {
    throw invalidArgument('stage', 'must be lower case letters, digits, "-" or "_", at most 63');
  }
  if (w.reason !== '' && !REASON.test(w.reason)) {
    throw invalidArgument('reason', 'must be UPPER_SNAKE_CASE');
  }
  if (w.workerId.length > 256) throw invalidArgument('worker_id', 'must be at most 256 characters');
  if (w.asyncToken.length > 256) {
    throw invalidArgument('async_token', 'must be at most 256 characters');
  }
  for (const stage of w.fanOutStages) {
    if (!NAME.test(stage)) {
      throw invalidArgument('fan_out_stages', `${JSON.stringify(stage)} is not a stage name`);
    }
  }
  if (w.payload !== undefined) checkPayload(w.payload, maxPayloadBytes);
  if (w.progress !== undefined) refuse(progressViolation(w.progress, 'progress'));
  if (w.error !== undefined) refuse(errorViolation(w.error, 'error'));
}

function checkPayload(p: Payload, maxBytes: number): void {
  if (p.data.length > maxBytes) {
    throw new DsatError(
      'RESOURCE_EXHAUSTED',
      'PAYLOAD_TOO_LARGE',
      `payload: ${p.data.length} bytes is more than the ${maxBytes} bytes a task record can hold`,
      { field: 'payload', metadata: { limit: String(maxBytes), size: String(p.data.length) } },
    );
  }
  refuse(contentTypeViolation(p.contentType, 'payload.content_type'));
}

function refuse(violation: FieldViolation | undefined): void {
  if (violation !== undefined) throw invalidArgument(violation.field, violation.description);
}

export function validateCreate(w: TransitionWrite): void {
  const create = w.create as NonNullable<TransitionWrite['create']>;
  if (!NAME.test(create.pipeline))
    throw invalidArgument('create.pipeline', 'is not a pipeline name');
  if (w.stage === '') throw invalidArgument('stage', 'a create names the entry stage');
  if (w.toState !== TaskState.TASK_STATE_QUEUED) {
    throw invalidArgument('to_state', 'a create moves to QUEUED');
  }
  if (w.expectedState !== TaskState.TASK_STATE_UNSPECIFIED) {
    throw invalidArgument('expected_state', 'a create expects no state');
  }
  if (w.attempt > 1) throw invalidArgument('attempt', 'a create starts at attempt 1');
  if (create.idempotencyKey.length > 256 || LONE_SURROGATE.test(create.idempotencyKey)) {
    // It becomes part of a LevelDB key, where a lone surrogate would turn into U+FFFD.
    throw invalidArgument(
      'create.idempotency_key',
      'must be well-formed text of at most 256 characters',
    );
  }
  if (create.traceparent !== '' && !isTraceparent(create.traceparent)) {
    throw invalidArgument('create.traceparent', 'is not a W3C traceparent');
  }
}

export function clampPage(size: number, fallback: number, max: number): number {
  if (!Number.isInteger(size) || size < 0) throw invalidArgument('page_size', 'must be ≥ 0');
  return size === 0 ? fallback : Math.min(size, max);
}

/** `advance` when the write names another stage, else the edge's same-stage move. */
export function pickMove(moves: readonly Move[], sameStage: boolean): Move | undefined {
  for (const m of moves) if ((m === 'advance') !== sameStage) return m;
  return undefined;
}

export function defaultReason(move: Move, to: TaskState): string {
  return move === 'advance' ? 'STAGE_DONE' : move === 'redrive' ? 'REDRIVE' : stateName(to);
}

export function edgeName(from: TaskState, to: TaskState): string {
  return `${stateName(from)} → ${stateName(to)}`;
}

const CODES: Partial<Record<DsatError['kind'], number>> = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  INTERNAL: 13,
  UNAVAILABLE: 14,
};

/** The google.rpc.Code a refused write's outcome carries. */
export function outcomeCode(err: DsatError): number {
  return CODES[err.kind] ?? 13;
}
