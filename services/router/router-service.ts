import { context as otelContext, isSpanContextValid, trace } from '@opentelemetry/api';
import type { CallContext } from 'nice-grpc-common';
import type { RouterServiceImplementation } from '../../gen/dsat/router/v1/router';
import type { Task } from '../../gen/dsat/task/v1/task';
import type { Logger } from '../shared/logger';
import { formatTraceparent } from '../shared/task-tracing';
import type { TerminatorContext } from '../shared/terminator';
import type { AsyncCompletionOptions } from './async-completion';
import { completeAsync } from './async-completion';
import type { Dispatcher } from './dispatcher';
import type { ForwardIntakeOptions } from './forward-intake';
import { takeForwarded } from './forward-intake';
import type { TaskCancelOptions } from './task-cancel';
import { cancelTask } from './task-cancel';
import type { TaskIntake } from './task-intake';
import { runSubmitStream } from './task-intake';
import type { WorkerSessionOptions } from './worker-session';
import { runWorkerSession } from './worker-session';
import { PEER_IDENTITY, workerIdOf } from '../shared/peer-identity';

export interface RouterServiceDeps {
  readonly routerId: string;
  readonly intake: TaskIntake;
  readonly dispatcher: Dispatcher;
  readonly cancel: TaskCancelOptions;
  readonly completion: AsyncCompletionOptions;
  readonly session: WorkerSessionOptions;
  readonly forward: ForwardIntakeOptions;
  readonly maxSubmitPending: number;
  readonly logger: Logger;
}

function traceparentOf(context: CallContext): string {
  const v = context.metadata.get('traceparent');
  return typeof v === 'string' ? v : '';
}

/** A unary call's own server span (the tracing middleware's) parents the task, else its caller. */
function callTraceparent(context: CallContext): string {
  const sc = trace.getSpanContext(otelContext.active());
  return sc && isSpanContextValid(sc) ? formatTraceparent(sc) : traceparentOf(context);
}

/** RouterService: each handler checks its input and calls the domain module that does the work. */
export function createRouterService(
  deps: RouterServiceDeps,
): RouterServiceImplementation<TerminatorContext> {
  return {
    submitTask: (req, context) => deps.intake.submit(req, callTraceparent(context), context.signal),

    submitTasks: (requests, context) =>
      runSubmitStream(
        requests,
        context.signal,
        deps.intake,
        deps.maxSubmitPending,
        deps.logger,
        traceparentOf(context),
      ),

    async cancelTask(req) {
      const task: Task = await cancelTask(deps.cancel, req.taskId, req.reason);
      return { task };
    },

    completeAsync: (req) => completeAsync(deps.completion, req),

    getRouterLoad: () =>
      Promise.resolve({ routerId: deps.routerId, stages: deps.dispatcher.load() }),

    connectWorker: (requests, context) =>
      runWorkerSession(requests, context.signal, {
        ...deps.session,
        certifiedWorkerId: workerIdOf(context.metadata.get(PEER_IDENTITY)),
      }),

    async *forwardTasks(requests) {
      for await (const req of requests)
        yield { taskIds: await takeForwarded(deps.forward, req.tasks) };
    },
  };
}
