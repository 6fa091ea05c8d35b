import { context, trace } from '@opentelemetry/api';
import {
  endTaskSpan,
  NO_TASK_SPAN,
  SPAN_NAMES,
  SpanKind,
  startTaskSpan,
} from '../services/shared/task-tracing';
import type { Span } from '@opentelemetry/api';
import { settle } from './thenable';

/** What the hook reads from a task's context (the worker's TaskContext has these). */
interface AttemptFacts {
  readonly taskId: string;
  readonly stage: string;
  readonly attempt: number;
  readonly pipeline: string;
  readonly parentTaskId: string;
  readonly traceparent: string;
  /** Why the attempt was taken away (cancel, timeout, lease lost, stream lost); else undefined. */
  readonly abortReason: string | undefined;
  span: Span | undefined;
}

/**
 * The worker's default hook: one `dsat.process <stage>` CONSUMER span per attempt, a child of the
 * context the router sent with the task (never of the worker's stream), active while the handler
 * runs so that the handler's own spans nest under it. With no OpenTelemetry SDK started, the
 * span is a no-op.
 */
export function processSpanHooks(workerId: () => string) {
  return {
    aroundTask(ctx: AttemptFacts, run: () => unknown): unknown {
      const span = startTaskSpan(
        SPAN_NAMES.process(ctx.stage),
        SpanKind.CONSUMER,
        ctx.traceparent,
        {
          taskId: ctx.taskId,
          pipeline: ctx.pipeline,
          stage: ctx.stage,
          attempt: ctx.attempt,
          workerId: workerId(),
          parentTaskId: ctx.parentTaskId,
        },
        'process',
      );
      ctx.span = span;
      // No SDK: nothing would record the span, so no context needs to carry it.
      if (span === NO_TASK_SPAN) return run();
      const failed = (err: unknown): never => {
        const e = err as { code?: unknown; message?: unknown } | null;
        endTaskSpan(span, {
          code: typeof e?.code === 'string' ? e.code : undefined,
          message: typeof e?.message === 'string' ? e.message : String(err),
        });
        throw err;
      };
      const ended = (out: unknown) => {
        // A handler that ignores its signal still returns; the attempt was taken away all the same.
        const aborted = ctx.abortReason;
        if (aborted !== undefined) {
          endTaskSpan(span, { code: 'ATTEMPT_ABORTED', message: aborted });
        } else endTaskSpan(span);
        return out;
      };
      // A synchronous handler's span ends at once; an async one's when its promise settles.
      return settle(() => context.with(trace.setSpan(context.active(), span), run), ended, failed);
    },
  };
}
