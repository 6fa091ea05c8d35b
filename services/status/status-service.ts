import { throwIfAborted } from 'abort-controller-x';
import type { CallContext } from 'nice-grpc-common';
import type {
  ApplyTransitionsRequest,
  ApplyTransitionsResponse,
  StatusServiceImplementation,
  TransitionOutcome,
  TransitionWrite,
  WatchEventsResponse,
  WatchTaskResponse,
} from '../../gen/dsat/status/v1/status';
import type { TaskFilter } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { invalidArgument } from '../shared/errors';
import type { TerminatorContext } from '../shared/terminator';
import type { StatusStore } from './status-store';
import { compileTransitionMask } from './transition-mask';

/** Writes in one message: the store commits them in one batch anyway; this bounds one request. */
const MAX_WRITES_PER_MESSAGE = 10_000;
const MAX_SKIP_PREFIX = 128;

function checkFilter(filter: TaskFilter | undefined, field = 'filter'): TaskFilter | undefined {
  filter?.states.forEach((s, i) => {
    if (!(s in TaskState) || s === TaskState.TASK_STATE_UNSPECIFIED) {
      throw invalidArgument(`${field}.states[${i}]`, `${s} is not a task state`);
    }
  });
  return filter;
}

function checkWrites(writes: TransitionWrite[]): TransitionWrite[] {
  if (writes.length > MAX_WRITES_PER_MESSAGE) {
    throw invalidArgument('writes', `more than ${MAX_WRITES_PER_MESSAGE} writes in one message`);
  }
  return writes;
}

/**
 * `positional_outcomes`: OK outcomes that are not duplicates lose their ids (the writer knows them
 * by position). The store made these outcomes for this answer alone, so they are changed in place.
 */
function unnameOk(outcomes: TransitionOutcome[]): TransitionOutcome[] {
  for (const o of outcomes) {
    if (o.code === 0 && !o.duplicate) {
      o.transitionId = '';
      o.taskId = '';
    }
  }
  return outcomes;
}

/** Thin handlers: validate, call the store, return. */
export function createStatusService(
  store: StatusStore,
): StatusServiceImplementation<CallContext & TerminatorContext> {
  return {
    async getTask(req) {
      return { task: await store.getTask(req.taskId) };
    },
    async listTasks(req) {
      return store.listTasks(checkFilter(req.filter), req.pageSize, req.pageToken);
    },
    async listUnfinishedTasks(req) {
      return store.listUnfinished(req.stages, req.pageSize, req.pageToken);
    },
    async getTaskHistory(req) {
      return store.getHistory(req.taskId, req.pageSize, req.pageToken);
    },
    async *watchTask(req, context): AsyncIterable<WatchTaskResponse> {
      yield* store.watchTask(req.taskId, req.fromRevision, context.signal);
    },
    async *watchEvents(req, context): AsyncIterable<WatchEventsResponse> {
      if (req.skipTransitionIdPrefix.length > MAX_SKIP_PREFIX) {
        throw invalidArgument(
          'skip_transition_id_prefix',
          `is ${req.skipTransitionIdPrefix.length} characters, more than ${MAX_SKIP_PREFIX}`,
        );
      }
      yield* store.watchEvents(
        checkFilter(req.filter),
        req.fromRevision,
        context.signal,
        req.skipTransitionIdPrefix,
        compileTransitionMask(req.transitionMask),
      );
    },
    async *applyTransitions(
      requests: AsyncIterable<ApplyTransitionsRequest>,
      context,
    ): AsyncIterable<ApplyTransitionsResponse> {
      // Messages are answered in order; several may be committing at once (pipelining), and the
      // store puts every write that arrives while a commit runs into the next one.
      const answers: Promise<ApplyTransitionsResponse>[] = [];
      let wake: (() => void) | undefined;
      let ended = false;
      let failure: unknown;
      // Shutdown (or the caller leaving) ends the stream at once; writes already given to the
      // store still commit, and the writer re-sends what went unanswered.
      const onAbort = () => wake?.();
      context.signal.addEventListener('abort', onAbort);
      void (async () => {
        try {
          for await (const req of requests) {
            const positional = req.positionalOutcomes;
            const answer = store
              .submit(checkWrites(req.writes))
              .then((outcomes) => ({ outcomes: positional ? unnameOk(outcomes) : outcomes }));
            // A failed answer ends the stream; those queued behind it are never awaited.
            answer.catch(() => undefined);
            answers.push(answer);
            wake?.();
          }
        } catch (err) {
          failure = err;
        } finally {
          ended = true;
          wake?.();
        }
      })();
      try {
        for (;;) {
          throwIfAborted(context.signal);
          const next = answers.shift();
          if (next) {
            yield await next;
            continue;
          }
          if (ended) break;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        context.signal.removeEventListener('abort', onAbort);
      }
      if (failure) throw failure;
    },
    async commitTransitions(req) {
      return { outcomes: await store.submit(checkWrites(req.writes)) };
    },
    async deleteTasks(req) {
      return { deletedCount: await store.deleteTasks(req.taskIds, checkFilter(req.filter)) };
    },
    async savePipeline(req) {
      if (!req.pipeline) throw invalidArgument('pipeline', 'is required');
      return store.savePipeline(req.pipeline);
    },
    async getPipeline(req) {
      if (!req.name) throw invalidArgument('name', 'is required');
      return { pipeline: store.getPipeline(req.name, req.version) };
    },
    async listPipelines(req) {
      return store.listPipelines(req.pageSize, req.pageToken);
    },
    async getStoreStats() {
      return store.stats();
    },
  };
}
