import { isAbortError } from 'abort-controller-x';
import { ClientError, Status } from 'nice-grpc-common';
import { BadRequest, ErrorInfo, RichClientError } from 'nice-grpc-error-details';
import { RouterServiceDefinition } from '../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../gen/dsat/status/v1/status';
import type { Task, TaskError, Transition } from '../gen/dsat/task/v1/task';
import { TaskState } from '../gen/dsat/task/v1/task';
import type { ChannelSettings } from '../services/shared/grpc-client';
import { createDsatChannel, createDsatClient } from '../services/shared/grpc-client';
import { DsatError } from '../services/shared/errors';
import { decodePayload, encodePayload } from './codecs';

export { TaskState };
export type { Task, Transition, TaskError };

/**
 * An error of a dsat call: the gRPC status code plus, when the server sent one, the
 * google.rpc.ErrorInfo reason (UPPER_SNAKE_CASE, stable) and the bad field.
 */
export class DsatClientError extends Error {
  readonly code: Status;
  readonly codeName: string;
  readonly reason: string | undefined;
  readonly field: string | undefined;
  readonly domain: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  readonly details: string;

  constructor(
    code: Status,
    details: string,
    info: {
      reason?: string;
      field?: string;
      domain?: string;
      metadata?: Record<string, string>;
    } = {},
    cause?: unknown,
  ) {
    super(`${Status[code]}: ${details}`, cause === undefined ? undefined : { cause });
    this.name = 'DsatClientError';
    this.code = code;
    this.codeName = Status[code] ?? String(code);
    this.details = details;
    this.reason = info.reason;
    this.field = info.field;
    this.domain = info.domain;
    this.metadata = info.metadata ?? {};
  }
}

/** The task ended in a state other than SUCCEEDED (FAILED, DEAD_LETTERED or CANCELLED). */
export class TaskFailedError extends Error {
  constructor(
    readonly taskId: string,
    readonly state: TaskState,
    readonly error: TaskError | undefined,
  ) {
    const name = (TaskState[state] ?? String(state)).replace(/^TASK_STATE_/, '');
    super(`task ${taskId} ended ${name}${error ? `: ${error.code} ${error.message}` : ''}`);
    this.name = 'TaskFailedError';
  }
}

/** Turns anything a call throws into a DsatClientError (abort errors pass through). */
export function toClientError(err: unknown): unknown {
  if (err instanceof DsatClientError || isAbortError(err)) return err;
  if (err instanceof DsatError) {
    return new DsatClientError(err.status, err.message, {
      reason: err.reason,
      field: err.field,
      metadata: err.metadata,
    });
  }
  if (err instanceof ClientError) {
    let info: ErrorInfo | undefined;
    let field: string | undefined;
    if (err instanceof RichClientError) {
      for (const d of err.extra) {
        if (d.$type === ErrorInfo.$type) info = d;
        if (d.$type === BadRequest.$type) field ??= d.fieldViolations[0]?.field;
      }
    }
    return new DsatClientError(
      err.code,
      err.details,
      {
        reason: info?.reason,
        field: field ?? info?.metadata.field,
        domain: info?.domain,
        metadata: info?.metadata,
      },
      err,
    );
  }
  return err;
}

async function wrap<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw toClientError(err);
  }
}

export interface ClientOptions {
  /** A router's address (default 127.0.0.1:7402). */
  readonly router?: string;
  /** The status service's address (default 127.0.0.1:7401). */
  readonly status?: string;
  /** Deadline of each unary call, in ms (default 10 s). */
  readonly deadlineMs?: number;
  readonly channel?: ChannelSettings;
}

export interface SubmitOptions {
  /** The payload's media type (default application/json; bytes default to octet-stream). */
  readonly contentType?: string;
  /** Makes the submit safe to retry: the same key returns the same task and creates nothing. */
  readonly idempotencyKey?: string;
  /** Higher runs first within a stage, -1000 to 1000. */
  readonly priority?: number;
  readonly traceparent?: string;
  readonly signal?: AbortSignal;
}

export interface Submitted {
  readonly taskId: string;
  readonly traceId: string;
  /** True when the idempotency key had been seen and no task was created. */
  readonly duplicate: boolean;
}

export type TaskEvent =
  | { readonly type: 'snapshot'; readonly task: Task }
  | { readonly type: 'transition'; readonly transition: Transition };

export interface WatchOptions {
  /** Resume after this revision (the last one seen); 0 starts with the current record. */
  readonly fromRevision?: number;
  readonly signal?: AbortSignal;
}

export interface ResultOptions {
  readonly signal?: AbortSignal;
  /** Give up waiting after this long (DEADLINE_EXCEEDED); the task goes on. */
  readonly timeoutMs?: number;
}

export interface DsatTaskClient {
  submit(pipeline: string, input: unknown, options?: SubmitOptions): Promise<Submitted>;
  get(taskId: string, options?: { signal?: AbortSignal }): Promise<Task>;
  /**
   * The task's record, then each transition as it is committed, until it ends. A broken stream
   * is resumed from the last revision seen, so no transition is missed or repeated.
   */
  watch(taskId: string, options?: WatchOptions): AsyncIterable<TaskEvent>;
  /** Waits for the task to end; resolves with its decoded output, or throws TaskFailedError. */
  result<T = unknown>(taskId: string, options?: ResultOptions): Promise<T>;
  /**
   * Waits until the task and every branch its fan-outs started (and theirs) have ended; resolves
   * with their final records, the task first, whatever states they ended in.
   */
  settled(taskId: string, options?: ResultOptions): Promise<Task[]>;
  cancel(taskId: string, reason?: string): Promise<Task>;
  /**
   * Answers a task WAITING at an ASYNC stage: `output` (encoded with `contentType`, default JSON)
   * becomes the next stage's input. With `error`, the task fails instead. Safe to retry.
   */
  completeAsync(
    token: string,
    output: unknown,
    options?: { contentType?: string; error?: { code: string; message: string } },
  ): Promise<{ taskId: string; state: TaskState }>;
  close(): void;
}

const TERMINAL = new Set([
  TaskState.TASK_STATE_SUCCEEDED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_DEAD_LETTERED,
  TaskState.TASK_STATE_CANCELLED,
]);
/** Codes after which a watch is resumed rather than given up. */
const RESUMABLE = new Set([
  Status.UNAVAILABLE,
  Status.INTERNAL,
  Status.UNKNOWN,
  Status.CANCELLED,
  Status.ABORTED,
]);

/**
 * Runs `wait` with a signal that aborts on the caller's signal or after `timeoutMs`; a timeout
 * becomes DEADLINE_EXCEEDED naming the task.
 */
async function untilDeadline<T>(
  taskId: string,
  opts: ResultOptions,
  wait: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const abort = new AbortController();
  const onAbort = () => abort.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let timedOut = false;
  const timer =
    opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          abort.abort();
        }, opts.timeoutMs);
  try {
    return await wait(abort.signal);
  } catch (err) {
    if (timedOut) {
      throw new DsatClientError(
        Status.DEADLINE_EXCEEDED,
        `task ${taskId} did not end within ${opts.timeoutMs} ms`,
      );
    }
    throw err;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** Creates a client of the mesh: submit to a router, read and follow tasks on the status service. */
export function createClient(options: ClientOptions = {}): DsatTaskClient {
  const routerChannel = createDsatChannel(options.router ?? '127.0.0.1:7402', options.channel);
  const statusChannel = createDsatChannel(options.status ?? '127.0.0.1:7401', options.channel);
  const settings = { deadline: options.deadlineMs ?? 10_000 };
  const router = createDsatClient(RouterServiceDefinition, routerChannel, settings);
  const status = createDsatClient(StatusServiceDefinition, statusChannel, settings);

  async function* watch(taskId: string, opts: WatchOptions = {}): AsyncGenerator<TaskEvent> {
    let last = opts.fromRevision ?? 0;
    let backoff = 100;
    for (;;) {
      try {
        for await (const res of status.watchTask(
          { taskId, fromRevision: last },
          { signal: opts.signal },
        )) {
          backoff = 100;
          const ev = res.event;
          if (!ev) continue;
          if (ev.$case === 'snapshot') {
            last = Math.max(last, ev.value.revision);
            yield { type: 'snapshot', task: ev.value };
            if (TERMINAL.has(ev.value.state)) return;
          } else {
            if (ev.value.revision <= last) continue;
            last = ev.value.revision;
            yield { type: 'transition', transition: ev.value };
            if (TERMINAL.has(ev.value.toState)) return;
          }
        }
        return;
      } catch (err) {
        if (opts.signal?.aborted || isAbortError(err)) throw err;
        const e = toClientError(err);
        if (!(e instanceof DsatClientError) || !RESUMABLE.has(e.code)) throw e;
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 2_000);
      }
    }
  }

  return {
    async submit(pipeline, input, opts = {}) {
      const contentType =
        opts.contentType ??
        (input instanceof Uint8Array ? 'application/octet-stream' : 'application/json');
      const payload = (() => {
        try {
          return encodePayload(input, contentType);
        } catch (err) {
          throw toClientError(err);
        }
      })();
      const res = await wrap(
        router.submitTask(
          {
            pipeline,
            payload: payload.data,
            contentType: payload.contentType,
            idempotencyKey: opts.idempotencyKey ?? '',
            priority: opts.priority ?? 0,
            traceparent: opts.traceparent ?? '',
          },
          { signal: opts.signal },
        ),
      );
      return { taskId: res.taskId, traceId: res.traceId, duplicate: res.duplicate };
    },
    async get(taskId, opts = {}) {
      const res = await wrap(status.getTask({ taskId }, { signal: opts.signal }));
      if (!res.task) throw new DsatClientError(Status.NOT_FOUND, `task ${taskId} not found`);
      return res.task;
    },
    watch,
    result<T>(taskId: string, opts: ResultOptions = {}) {
      return untilDeadline(taskId, opts, async (signal) => {
        for await (const ev of watch(taskId, { signal })) {
          const state = ev.type === 'snapshot' ? ev.task.state : ev.transition.toState;
          if (!TERMINAL.has(state)) continue;
          if (state === TaskState.TASK_STATE_SUCCEEDED) {
            const payload = ev.type === 'snapshot' ? ev.task.output : ev.transition.payload;
            return decodePayload(payload ?? (await this.get(taskId)).output) as T;
          }
          const error = ev.type === 'snapshot' ? ev.task.lastError : ev.transition.error;
          throw new TaskFailedError(taskId, state, error);
        }
        throw new DsatClientError(Status.UNAVAILABLE, `the watch of task ${taskId} ended early`);
      });
    },
    settled(taskId: string, opts: ResultOptions = {}) {
      return untilDeadline(taskId, opts, async (signal) => {
        const out: Task[] = [];
        const todo = [taskId];
        for (let id = todo.shift(); id !== undefined; id = todo.shift()) {
          for await (const ev of watch(id, { signal })) void ev; // the watch ends after the end
          const task = await this.get(id, { signal });
          if (!TERMINAL.has(task.state)) {
            throw new DsatClientError(Status.UNAVAILABLE, `the watch of task ${id} ended early`);
          }
          out.push(task);
          todo.push(...task.branches.map((b) => b.branchId));
        }
        return out;
      });
    },
    async cancel(taskId, reason = '') {
      const res = await wrap(router.cancelTask({ taskId, reason }));
      if (!res.task) throw new DsatClientError(Status.NOT_FOUND, `task ${taskId} not found`);
      return res.task;
    },
    async completeAsync(token, output, opts = {}) {
      const payload = (() => {
        try {
          return encodePayload(output, opts.contentType ?? 'application/json');
        } catch (err) {
          throw toClientError(err);
        }
      })();
      const res = await wrap(
        router.completeAsync({
          token,
          output: payload.data,
          contentType: payload.contentType,
          error: opts.error && { ...opts.error, retryable: false, details: {} },
        }),
      );
      return { taskId: res.taskId, state: res.state };
    },
    close() {
      routerChannel.close();
      statusChannel.close();
    },
  };
}
