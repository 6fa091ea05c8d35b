import { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type { Payload } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';

/** The one-stage pipeline the status-process tests create tasks in: a create needs it saved. */
export const DEMO_PIPELINE = Pipeline.fromPartial({ name: 'demo', stages: [{ name: 'parse' }] });

/** A create of `taskId` at DEMO_PIPELINE's stage, as a router writes it on a submit. */
export function createWrite(
  taskId: string,
  payload: Payload = { data: Buffer.from('{"n":1}'), contentType: 'application/json' },
) {
  return {
    transitionId: `create-${taskId}`,
    taskId,
    toState: TaskState.TASK_STATE_QUEUED,
    stage: 'parse',
    attempt: 1,
    reason: 'SUBMITTED',
    payload,
    create: {
      pipeline: 'demo',
      pipelineVersion: 1,
      idempotencyKey: '',
      priority: 0,
      traceparent: '',
    },
  };
}
