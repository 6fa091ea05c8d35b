import crypto from 'node:crypto';
import type { Span } from '@opentelemetry/api';
import {
  endTaskSpan,
  SPAN_NAMES,
  SpanKind,
  spanTraceparent,
  startTaskSpan,
} from '../shared/task-tracing';
import { AbortError } from 'abort-controller-x';
import { Status } from 'nice-grpc-common';
import type {
  SubmitTaskRequest,
  SubmitTaskResponse,
  SubmitTasksAck,
  SubmitTasksEntry,
  SubmitTasksRequest,
  SubmitTasksResponse,
} from '../../gen/dsat/router/v1/router';
import type { TransitionOutcome, TransitionWrite } from '../../gen/dsat/status/v1/status';
import type { Task } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { AsyncQueue } from '../shared/async-queue';
import { randomHexId } from '../shared/random-ids';
import { traceIdOf } from '../shared/traceparent';
import { checkContentType, needsBytes } from '../shared/content-types';
import type { ErrorKind } from '../shared/errors';
import { DsatError, invalidArgument } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { HeldTaskInit } from './held-task';
import type { CompiledPipeline, PipelineRegistry } from './pipeline-registry';
import { givenUp, type StatusWriter } from './status-writer';
import type { TransitionIds } from './transition-write';

const PIPELINE_NAME = /^[a-z0-9_-]{1,63}$/;
const PRINTABLE = /^[\x20-\x7e]*$/;
export const MAX_PRIORITY = 1000;
/**
 * Most bytes of writes waiting for the status service before a submit is refused: while it is
 * away or slow they wait in this router's memory, and callers that keep submitting would grow it
 * without end.
 */
export const MAX_WAITING_WRITE_BYTES = 64 * 1024 * 1024;
export const MAX_IDEMPOTENCY_KEY = 128;

/** A payload the router takes (submit input, forwarded input, async output): at most `max` bytes. */
export function checkPayloadSize(size: number, max: number, field: string): void {
  if (size > max) {
    throw new DsatError(
      'RESOURCE_EXHAUSTED',
      'PAYLOAD_TOO_LARGE',
      `${field}: ${size} bytes is more than the ${max} bytes allowed (--max-payload-size)`,
      { field, metadata: { limit: String(max), size: String(size) } },
    );
  }
}

export function checkPriority(priority: number, field = 'priority'): void {
  if (!Number.isInteger(priority) || Math.abs(priority) > MAX_PRIORITY) {
    throw invalidArgument(field, `must be an integer from -${MAX_PRIORITY} to ${MAX_PRIORITY}`);
  }
}

export interface TaskIntakeOptions {
  readonly writer: StatusWriter;
  readonly ids: TransitionIds;
  readonly pipelines: PipelineRegistry;
  readonly maxPayloadSize: number;
  /** Most bytes of writes waiting for the status service before a submit is refused. */
  readonly maxWaitingWriteBytes?: number;
  readonly logger: Logger;
  /** Holds (or forwards) a task once its create is committed. */
  readonly accept: (task: HeldTaskInit) => void;
  /** Reads a task, for the trace id of a repeated idempotency key. */
  readonly readTask?: (taskId: string) => Promise<Task | undefined>;
}

/** A submit that passed every check that needs no pipeline. */
interface CheckedSubmit {
  readonly pipeline: string;
  readonly payload: Buffer;
  readonly contentType: string;
  readonly priority: number;
  readonly idempotencyKey: string;
  readonly traceparent: string;
}

interface CreateContext {
  readonly taskId: string;
  readonly traceId: string;
  readonly pipeline: CompiledPipeline;
  readonly checked: CheckedSubmit;
  /** The task's stored traceparent: the `dsat.submit` span's context when tracing is on. */
  readonly traceparent: string;
  readonly span: Span;
  readonly done: (outcome: TransitionOutcome, ctx: CreateContext) => void;
}

/**
 * A fresh traceparent for a task submitted without one while tracing is off, so that every task
 * has a trace id from its first transition.
 */
export function newTraceparent(): string {
  return `00-${randomHexId(16)}-${randomHexId(8)}-01`;
}

/**
 * Submits: every check of the request (each bad field named), the pipeline's latest version
 * pinned, then one create write (SUBMITTED + QUEUED at the entry stage, with the payload). The
 * answer, and the task's entry into a ready queue, come only once that write is committed.
 */
export class TaskIntake {
  private stopped = false;

  constructor(private readonly options: TaskIntakeOptions) {}

  stop(): void {
    this.stopped = true;
  }

  /** Checks a request; throws the DsatError that names the bad field. */
  check(req: SubmitTaskRequest, metadataTraceparent = ''): CheckedSubmit {
    if (this.stopped) {
      throw new DsatError(
        'UNAVAILABLE',
        'ROUTER_STOPPING',
        'the router is shutting down; submit to another router',
      );
    }
    if (req.pipeline === '') throw invalidArgument('pipeline', 'is required');
    if (!PIPELINE_NAME.test(req.pipeline)) {
      throw invalidArgument('pipeline', 'must be 1 to 63 lower case letters, digits, "-" or "_"');
    }
    const contentType = checkContentType(req.contentType);
    checkPayloadSize(req.payload.length, this.options.maxPayloadSize, 'payload');
    if (req.payload.length === 0 && needsBytes(contentType)) {
      throw invalidArgument(
        'payload',
        `is empty, which is not a value of ${contentType}`,
        'PAYLOAD_EMPTY',
      );
    }
    checkPriority(req.priority);
    const key = req.idempotencyKey;
    if (key.length > MAX_IDEMPOTENCY_KEY || !PRINTABLE.test(key)) {
      throw invalidArgument(
        'idempotency_key',
        `must be at most ${MAX_IDEMPOTENCY_KEY} printable ASCII characters`,
      );
    }
    let traceparent = req.traceparent;
    if (traceparent !== '') {
      if (traceIdOf(traceparent) === undefined) {
        throw invalidArgument(
          'traceparent',
          'is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)',
        );
      }
    } else if (traceIdOf(metadataTraceparent) !== undefined) {
      traceparent = metadataTraceparent;
    }
    return {
      pipeline: req.pipeline,
      payload: req.payload,
      contentType: req.contentType === '' ? 'application/octet-stream' : req.contentType,
      priority: req.priority,
      idempotencyKey: key,
      traceparent,
    };
  }

  /** `abandoned`: the caller's call; a create not yet sent when it fires is never made. */
  private create(
    checked: CheckedSubmit,
    pipeline: CompiledPipeline,
    done: CreateContext['done'],
    abandoned?: AbortSignal,
  ) {
    const taskId = crypto.randomUUID();
    // The submit span parents the whole task: its context is what the task stores and carries.
    const span = startTaskSpan(
      SPAN_NAMES.submit,
      SpanKind.PRODUCER,
      checked.traceparent || undefined,
      { taskId, pipeline: pipeline.name, stage: pipeline.entry.name },
      'send',
    );
    const traceparent = spanTraceparent(span) ?? (checked.traceparent || newTraceparent());
    const traceId = traceIdOf(traceparent) ?? '';
    const w: TransitionWrite = {
      transitionId: this.options.ids.next(),
      taskId,
      expectedState: TaskState.TASK_STATE_UNSPECIFIED,
      expectedAttempt: 0,
      toState: TaskState.TASK_STATE_QUEUED,
      stage: pipeline.entry.name,
      attempt: 1,
      workerId: '',
      reason: 'SUBMITTED',
      error: undefined,
      payload: { data: checked.payload, contentType: checked.contentType },
      progress: undefined,
      create: {
        pipeline: pipeline.name,
        pipelineVersion: pipeline.version,
        idempotencyKey: checked.idempotencyKey,
        priority: checked.priority,
        traceparent,
      },
      asyncToken: '',
      fanOutStages: [],
    };
    const ctx: CreateContext = { taskId, traceId, pipeline, checked, traceparent, span, done };
    const writer = this.options.writer;
    const most = this.options.maxWaitingWriteBytes ?? MAX_WAITING_WRITE_BYTES;
    // Creates whose callers gave up while the status service was away need not hold the room.
    if (writer.pendingBytes + checked.payload.length > most) writer.withdrawAbandoned();
    const waiting = writer.pendingBytes;
    if (waiting + checked.payload.length > most) {
      const message =
        `${waiting} bytes of writes wait for the status service (away or slow), and this task ` +
        `would pass the ${most} a router holds (--max-waiting-write-bytes): it was not created; retry later`;
      this.onCreated(givenUp(w, message, 'STATUS_BACKLOGGED'), ctx);
      return;
    }
    writer.write(w, this.onCreated, ctx, abandoned);
  }

  private readonly onCreated = (o: TransitionOutcome, ctx: CreateContext) => {
    if (o.code === 0 && !o.duplicate && o.taskId === ctx.taskId) {
      this.options.accept({
        taskId: ctx.taskId,
        pipeline: ctx.pipeline,
        stage: ctx.pipeline.entry,
        attempt: 1,
        priority: ctx.checked.priority,
        hops: 0,
        traceparent: ctx.traceparent,
        input: { data: ctx.checked.payload, contentType: ctx.checked.contentType },
        progress: undefined,
        parentTaskId: '',
      });
    }
    endTaskSpan(ctx.span, o.code === 0 ? undefined : { code: o.reason, message: o.message });
    ctx.done(o, ctx);
  };

  /** SubmitTask: resolves once the task is durably QUEUED at its entry stage. */
  async submit(
    req: SubmitTaskRequest,
    metadataTraceparent = '',
    abandoned?: AbortSignal,
  ): Promise<SubmitTaskResponse> {
    const checked = this.check(req, metadataTraceparent);
    const pipeline = await this.options.pipelines.latest(checked.pipeline);
    const { outcome, ctx } = await new Promise<{ outcome: TransitionOutcome; ctx: CreateContext }>(
      (resolve) =>
        this.create(checked, pipeline, (outcome, ctx) => resolve({ outcome, ctx }), abandoned),
    );
    if (outcome.code !== 0) throw refusal(outcome);
    if (outcome.duplicate || outcome.taskId !== ctx.taskId) {
      const first = await this.options.readTask?.(outcome.taskId).catch(() => undefined);
      return { taskId: outcome.taskId, traceId: first?.traceId ?? '', duplicate: true };
    }
    return { taskId: ctx.taskId, traceId: ctx.traceId, duplicate: false };
  }

  /**
   * One SubmitTasks batch: each entry is checked and created on its own, and `onAck` runs for
   * each as soon as its create is committed (or at once when it is refused).
   */
  async submitBatch(
    entries: readonly SubmitTasksEntry[],
    onAck: (ack: SubmitTasksAck) => void,
    metadataTraceparent = '',
    abandoned?: AbortSignal,
  ): Promise<void> {
    const checked: (CheckedSubmit | undefined)[] = [];
    const names = new Set<string>();
    for (const e of entries) {
      try {
        const c = this.check(e.task ?? emptyRequest(), metadataTraceparent);
        checked.push(c);
        names.add(c.pipeline);
      } catch (err) {
        checked.push(undefined);
        onAck(errorAck(e.clientRef, err));
      }
    }
    const pipelines = new Map<string, CompiledPipeline | DsatError>();
    await Promise.all(
      [...names].map((name) =>
        this.options.pipelines.latest(name).then(
          (p) => pipelines.set(name, p),
          (err: unknown) =>
            pipelines.set(
              name,
              err instanceof DsatError
                ? err
                : new DsatError('UNAVAILABLE', 'STATUS_UNAVAILABLE', 'cannot read the pipeline'),
            ),
        ),
      ),
    );
    entries.forEach((e, i) => {
      const c = checked[i];
      if (c === undefined) return;
      const p = pipelines.get(c.pipeline)!;
      if (p instanceof DsatError) {
        onAck(errorAck(e.clientRef, p));
        return;
      }
      this.create(
        c,
        p,
        (o, ctx) => {
          if (o.code !== 0) {
            onAck(errorAck(e.clientRef, refusal(o)));
            return;
          }
          const duplicate = o.duplicate || o.taskId !== ctx.taskId;
          onAck({
            clientRef: e.clientRef,
            taskId: o.taskId,
            traceId: duplicate ? '' : ctx.traceId,
            code: 0,
            message: '',
            duplicate,
          });
        },
        abandoned,
      );
    });
  }
}

function emptyRequest(): SubmitTaskRequest {
  return {
    pipeline: '',
    payload: Buffer.alloc(0),
    contentType: '',
    idempotencyKey: '',
    priority: 0,
    traceparent: '',
  };
}

/** A refused create as the error the caller gets. */
function refusal(o: TransitionOutcome): DsatError {
  const kind: ErrorKind =
    o.code === Status.UNAVAILABLE
      ? 'UNAVAILABLE'
      : o.code === Status.CANCELLED
        ? 'CANCELLED'
        : o.code === Status.INVALID_ARGUMENT
          ? 'INVALID_ARGUMENT'
          : o.code === Status.RESOURCE_EXHAUSTED
            ? 'RESOURCE_EXHAUSTED'
            : o.code === Status.NOT_FOUND
              ? 'NOT_FOUND'
              : o.code === Status.FAILED_PRECONDITION
                ? 'FAILED_PRECONDITION'
                : 'INTERNAL';
  // Refusals of the router's own (it is stopping, or too much waits for the status service).
  const own =
    o.reason === 'ROUTER_SHUTTING_DOWN' ||
    o.reason === 'STATUS_BACKLOGGED' ||
    o.reason === 'CALLER_GONE';
  return new DsatError(
    kind,
    o.reason || 'CREATE_REFUSED',
    own ? o.message : `the status service refused the task: ${o.message}`,
  );
}

function errorAck(clientRef: string, err: unknown): SubmitTasksAck {
  const e =
    err instanceof DsatError
      ? err
      : new DsatError('INTERNAL', 'INTERNAL', 'internal error; the router log has the details');
  return {
    clientRef,
    taskId: '',
    traceId: '',
    code: e.status,
    message: e.message,
    duplicate: false,
  };
}

/**
 * The SubmitTasks handler body: reads batches, acks each entry as soon as it is durable (every
 * ack ready in a tick goes in one message), and stops reading while `maxPending` entries wait,
 * so a fast producer cannot fill the router's memory.
 */
export async function* runSubmitStream(
  requests: AsyncIterable<SubmitTasksRequest>,
  signal: AbortSignal,
  intake: TaskIntake,
  maxPending: number,
  logger: Logger,
  metadataTraceparent = '',
): AsyncGenerator<SubmitTasksResponse> {
  const out = new AsyncQueue<SubmitTasksResponse>();
  let pending = 0;
  let inputDone = false;
  let resume: (() => void) | undefined;
  let acks: SubmitTasksAck[] = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    if (acks.length > 0) {
      out.push({ acks });
      acks = [];
    }
    if (inputDone && pending === 0) out.end();
  };
  const onAck = (ack: SubmitTasksAck) => {
    acks.push(ack);
    pending--;
    if (resume && pending < maxPending) {
      const r = resume;
      resume = undefined;
      r();
    }
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  };
  const onAbort = () => {
    out.fail(new AbortError());
    resume?.();
  };
  if (signal.aborted) onAbort();
  signal.addEventListener('abort', onAbort);
  const reading = (async () => {
    for await (const req of requests) {
      pending += req.entries.length;
      intake.submitBatch(req.entries, onAck, metadataTraceparent, signal).catch((err: unknown) => {
        logger.error({ err }, 'submit batch failed');
      });
      while (pending >= maxPending && !signal.aborted) {
        await new Promise<void>((r) => (resume = r));
      }
    }
    inputDone = true;
    if (!flushScheduled) flush();
  })().catch((err: unknown) => out.fail(err));
  try {
    yield* out;
  } finally {
    signal.removeEventListener('abort', onAbort);
    void reading;
  }
}
