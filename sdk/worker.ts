import { processSpanHooks } from './process-span';
import crypto from 'node:crypto';
import os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import type { Span } from '@opentelemetry/api';
import type {
  Assignment,
  ConnectWorkerRequest,
  ConnectWorkerResponse,
  Failure,
  Heartbeat,
  Result,
} from '../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../gen/dsat/router/v1/router';
import type { TaskError, TaskProgress } from '../gen/dsat/task/v1/task';
import { WorkerPhase } from '../gen/dsat/worker/v1/worker';
import { asyncToken } from '../services/shared/async-token';
import type { ChannelSettings } from '../services/shared/grpc-client';
import { clientChannelOptions } from '../services/shared/grpc-client';
import { channelCredentials } from '../services/shared/transport-security';
import { createLogger } from '../services/shared/logger';
import { openBidiStream } from '../services/shared/raw-stream';
import { codecFor } from './codecs';
import { settle } from './thenable';

export { WorkerPhase };

/** The subset of a pino logger the SDK uses; pass your own (pino, or anything shaped like it). */
export interface WorkerLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): WorkerLogger;
}

export interface ProgressUpdate {
  /** The fraction of the work done, from 0 to 1. */
  readonly fraction?: number;
  /** A short human-readable note. */
  readonly message?: string;
  /** Opaque bytes a later attempt gets back in `ctx.previousProgress`, to resume from. */
  readonly details?: Uint8Array;
}

/** What a handler knows about the attempt it runs. */
export interface TaskContext {
  readonly taskId: string;
  readonly stage: string;
  /** The attempt, from 1. A retry of the stage has a higher attempt. */
  readonly attempt: number;
  readonly pipeline: string;
  readonly pipelineVersion: number;
  /** The task whose fan-out started this one as a branch; "" for a submitted task. */
  readonly parentTaskId: string;
  readonly priority: number;
  /** The number of stages the task has passed. */
  readonly hops: number;
  /** The media type of the input. */
  readonly contentType: string;
  /** The end of the stage's run timeout, if it has one. */
  readonly deadline: Date | undefined;
  /** What an earlier attempt reported with its heartbeats, to resume from. */
  readonly previousProgress: TaskProgress | undefined;
  /**
   * The token an ASYNC stage waits for once this handler returns: give it to the outside system
   * that will answer with RouterService.CompleteAsync. Meaningless on other stages.
   */
  readonly asyncToken: string;
  /** The W3C traceparent of the task, the parent of this attempt's span. */
  readonly traceparent: string;
  /** Aborted when the task is cancelled, its lease is lost, its stream breaks, or on shutdown. */
  readonly signal: AbortSignal;
  /**
   * Why the attempt was taken away (cancel, lease lost, stream lost, shutdown); undefined while it
   * is still this worker's. Cheaper to poll than `signal`, whose AbortController is made on first
   * read.
   */
  readonly abortReason: string | undefined;
  /** A logger bound to the task, stage and attempt. */
  readonly logger: WorkerLogger;
  /**
   * The active span of this attempt (`dsat.process <stage>`), set by the default `aroundTask`
   * hook; undefined when custom hooks leave it unset.
   */
  span: Span | undefined;
  /** Reports progress; it rides in the next heartbeat (every heartbeat interval). */
  heartbeat(progress?: ProgressUpdate): void;
}

export type StageHandler = (input: unknown, ctx: TaskContext) => unknown;

/*
 * Brands instead of instanceof: a handler module may load another copy of this SDK (a .ts handler
 * beside a compiled dsat, or its own node_modules), whose classes are not these.
 */
const NON_RETRYABLE = Symbol.for('dsat.sdk.NonRetryableError');
const STAGE_OUTPUT = Symbol.for('dsat.sdk.StageOutput');

/** Thrown by a handler, fails the task at once instead of retrying it. */
export class NonRetryableError extends Error {
  readonly [NON_RETRYABLE] = true;
  /** The stable error code reported in TaskError.code; defaults to the error's name. */
  readonly code: string;
  constructor(message: string, options: { code?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NonRetryableError';
    this.code = options.code ?? 'NON_RETRYABLE';
  }
}

/** A handler's return value with a content type or a choice of next stages. */
export class StageOutput {
  readonly [STAGE_OUTPUT] = true;
  constructor(
    readonly value: unknown,
    readonly contentType: string | undefined,
    readonly next: readonly string[],
  ) {}
}

function isBranded<T>(value: unknown, brand: symbol): value is T {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[brand] === true
  );
}

/**
 * Wraps a handler's output: `contentType` picks the codec (default: the worker's
 * outputContentType, else the input's), and `next` chooses among the stage's declared next edges
 * (conditional routing; an undeclared edge fails the task with UNDECLARED_NEXT_STAGE).
 */
export function stageOutput(
  value: unknown,
  options: { contentType?: string; next?: readonly string[] } = {},
): StageOutput {
  return new StageOutput(value, options.contentType, options.next ?? []);
}

export interface WorkerHooks {
  /**
   * Runs around every attempt; `run` calls the handler and gives back what it returns: its value
   * when it is synchronous, its promise when not (and throws what a synchronous handler throws).
   * Return what `run` returned, or a promise of it. The place for tracing to start the
   * `dsat.process <stage>` span and set `ctx.span`.
   */
  aroundTask?(ctx: TaskContext, run: () => unknown): unknown;
}

export interface WorkerOptions {
  /** Routers to connect to, tried in turn ("host:port"). */
  readonly routers: readonly string[];
  /** A handler per stage. */
  readonly handlers?: Readonly<Record<string, StageHandler>>;
  /** One handler for every stage in `stages`. */
  readonly handler?: StageHandler;
  /** The stages to serve; default: every stage in `handlers`. */
  readonly stages?: readonly string[];
  /** Most attempts run at once (default 8): the credit this worker grants. */
  readonly concurrency?: number;
  /** Unique in the mesh and stable across reconnects (default: host name and a random suffix). */
  readonly workerId?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly logger?: WorkerLogger;
  /** Heartbeat every running attempt automatically (default true); false: only ctx.heartbeat(). */
  readonly autoHeartbeat?: boolean;
  /** Longest pause between reconnect attempts (default and maximum 5 s). */
  readonly maxReconnectBackoffMs?: number;
  /** How long drain() waits for running attempts before it aborts them (default 30 s). */
  readonly drainTimeoutMs?: number;
  /** The content type of outputs (default: the input's). */
  readonly outputContentType?: string;
  readonly channel?: ChannelSettings;
  readonly hooks?: WorkerHooks;
}

export interface WorkerInfo {
  readonly workerId: string;
  readonly stages: readonly string[];
  readonly concurrency: number;
  readonly inFlight: number;
  /** Results the router accepted. */
  readonly completed: number;
  /** Failures the router accepted. */
  readonly failed: number;
  /** Reports the router refused (stale attempts). */
  readonly refused: number;
  readonly connectedRouter: string;
  readonly phase: WorkerPhase;
  readonly startedAt: Date;
  readonly labels: Readonly<Record<string, string>>;
}

export interface Worker {
  readonly workerId: string;
  readonly phase: WorkerPhase;
  info(): WorkerInfo;
  /** Resolves once a router has welcomed this worker. */
  connected(signal?: AbortSignal): Promise<void>;
  /**
   * Stops asking for work, finishes the attempts it holds, reports them and waits for their
   * acks, then closes. Attempts still running after `timeoutMs` are aborted.
   */
  drain(timeoutMs?: number): Promise<void>;
  /** Aborts every attempt and closes at once; the router requeues what was running. */
  stop(): Promise<void>;
  /** Resolves when the worker has stopped (after drain() or stop()). */
  readonly stopped: Promise<void>;
}

const PROTOCOL_VERSION = 1;
const WELCOME_TIMEOUT_MS = 10_000;

class StreamLost extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'AbortError';
  }
}

/** One attempt running in a handler. */
class Running {
  readonly key: string;
  private controller: AbortController | undefined;
  /** Set once, by `abort`. */
  abortReason: string | undefined;
  progress: TaskProgress | undefined;
  beat = false;
  constructor(
    readonly a: Assignment,
    readonly conn: Connection,
  ) {
    this.key = `${a.taskId}:${a.attempt}`;
  }
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(new StreamLost(this.abortReason));
    }
    return this.controller.signal;
  }
  get aborted(): boolean {
    return this.abortReason !== undefined;
  }
  abort(reason: string) {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(new StreamLost(reason));
  }
}

/**
 * The TaskContext of one attempt. Its getters are the prototype's, so an attempt makes one object
 * and no closure; what is kept private is out of sight of a handler that logs its context.
 */
class AttemptContext implements TaskContext {
  readonly taskId: string;
  readonly stage: string;
  readonly attempt: number;
  readonly pipeline: string;
  readonly pipelineVersion: number;
  readonly parentTaskId: string;
  readonly priority: number;
  readonly hops: number;
  readonly deadline: Date | undefined;
  readonly previousProgress: TaskProgress | undefined;
  readonly traceparent: string;
  span: Span | undefined = undefined;
  readonly #r: Running;
  readonly #workerLogger: WorkerLogger;
  #logger: WorkerLogger | undefined;
  #heartbeat: ((progress?: ProgressUpdate) => void) | undefined;

  constructor(
    r: Running,
    readonly contentType: string,
    workerLogger: WorkerLogger,
  ) {
    const a = r.a;
    this.taskId = a.taskId;
    this.stage = a.stage;
    this.attempt = a.attempt;
    this.pipeline = a.pipeline;
    this.pipelineVersion = a.pipelineVersion;
    this.parentTaskId = a.parentTaskId;
    this.priority = a.priority;
    this.hops = a.hops;
    this.deadline = a.deadline;
    this.previousProgress = a.progress;
    this.traceparent = a.traceparent;
    this.#r = r;
    this.#workerLogger = workerLogger;
  }

  get asyncToken(): string {
    return asyncToken(this);
  }

  get signal(): AbortSignal {
    return this.#r.signal;
  }

  get abortReason(): string | undefined {
    return this.#r.abortReason;
  }

  get logger(): WorkerLogger {
    this.#logger ??= this.#workerLogger.child({
      taskId: this.taskId,
      stage: this.stage,
      attempt: this.attempt,
    });
    return this.#logger;
  }

  /** A function of its own (made on first use), so `const { heartbeat } = ctx` works too. */
  get heartbeat(): (progress?: ProgressUpdate) => void {
    const r = this.#r;
    this.#heartbeat ??= (progress?: ProgressUpdate) => {
      if (progress) {
        r.progress = {
          fraction: progress.fraction ?? 0,
          message: progress.message ?? '',
          details: progress.details ? Buffer.from(progress.details) : Buffer.alloc(0),
        };
      }
      r.beat = true;
    };
    return this.#heartbeat;
  }
}

/** One ConnectWorker stream to one router. */
class Connection {
  welcomed = false;
  closed = false;
  heartbeatMs = 1_000;
  routerId = '';
  readonly running = new Map<string, Running>();
  readonly unacked = new Map<string, 'result' | 'failure'>();
  results: Result[] = [];
  failures: Failure[] = [];
  credit = 0;
  flushScheduled = false;
  heartbeatTimer: NodeJS.Timeout | undefined;
  welcomeTimer: NodeJS.Timeout | undefined;
  endedResolve!: () => void;
  readonly ended = new Promise<void>((r) => (this.endedResolve = r));
  constructor(
    readonly address: string,
    readonly call: grpc.ClientDuplexStream<ConnectWorkerRequest, ConnectWorkerResponse>,
  ) {}
  send(m: ConnectWorkerRequest) {
    if (!this.closed) this.call.write(m);
  }
}

function defaultWorkerId(): string {
  return `${os.hostname()}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
}

/**
 * Creates a worker and starts connecting. The worker is DSAT's `state_machine` wrapper done right:
 * it says Hello, grants credit for its free slots only, runs each assigned attempt in its stage's
 * handler, heartbeats running attempts, reports results and failures in batches, aborts handlers
 * on Cancel, reconnects with capped backoff to any of its routers, and drains on request.
 */
export function createWorker(options: WorkerOptions): Worker {
  const handlers = new Map<string, StageHandler>();
  for (const [stage, h] of Object.entries(options.handlers ?? {})) {
    if (typeof h === 'function') handlers.set(stage, h);
  }
  const stages = [...(options.stages ?? [...handlers.keys()])];
  if (options.handler)
    for (const s of stages) if (!handlers.has(s)) handlers.set(s, options.handler);
  if (stages.length === 0) throw new Error('createWorker: no stages (give handlers or stages)');
  for (const s of stages) {
    if (!handlers.has(s)) throw new Error(`createWorker: no handler for stage ${s}`);
  }
  if (options.routers.length === 0) throw new Error('createWorker: no routers');
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error('createWorker: concurrency must be a positive integer');
  }
  const workerId = options.workerId || defaultWorkerId();
  const labels = { host: os.hostname(), ...(options.labels ?? {}) };
  const logger: WorkerLogger =
    options.logger ?? (createLogger('worker', 'warn') as unknown as WorkerLogger);
  const autoHeartbeat = options.autoHeartbeat ?? true;
  const maxBackoff = Math.min(5_000, Math.max(100, options.maxReconnectBackoffMs ?? 5_000));
  const drainDefault = options.drainTimeoutMs ?? 30_000;
  const hooks: WorkerHooks = options.hooks ?? processSpanHooks(() => workerId);
  const startedAt = new Date();

  let phase: WorkerPhase = WorkerPhase.WORKER_PHASE_CONNECTING;
  let current: Connection | undefined;
  let busy = 0;
  const counters = { completed: 0, failed: 0, refused: 0 };
  const clients = new Map<string, grpc.Client>();
  const connectedWaiters = new Set<() => void>();
  const idleWaiters = new Set<() => void>();
  const loopAbort = new AbortController();
  let stoppedResolve!: () => void;
  const stopped = new Promise<void>((r) => (stoppedResolve = r));

  const draining = () =>
    phase === WorkerPhase.WORKER_PHASE_DRAINING || phase === WorkerPhase.WORKER_PHASE_STOPPED;

  function clientFor(address: string): grpc.Client {
    let c = clients.get(address);
    if (!c) {
      c = new grpc.Client(
        address,
        channelCredentials(options.channel ?? {}) ?? grpc.credentials.createInsecure(),
        clientChannelOptions(options.channel),
      );
      clients.set(address, c);
    }
    return c;
  }

  function scheduleFlush(conn: Connection) {
    if (conn.flushScheduled) return;
    conn.flushScheduled = true;
    setImmediate(() => flush(conn));
  }

  /** Reports first, then the credit their slots freed, as the protocol asks. */
  function flush(conn: Connection) {
    conn.flushScheduled = false;
    if (conn.closed) return;
    // Credit rides with the results when there are any: one message per flush instead of two.
    const credit = draining() ? 0 : conn.credit;
    if (conn.results.length > 0) {
      const results = conn.results;
      conn.results = [];
      conn.send({ kind: { $case: 'results', value: { results, credit } } });
      conn.credit = 0;
    }
    if (conn.failures.length > 0) {
      const failures = conn.failures;
      conn.failures = [];
      conn.send({ kind: { $case: 'failures', value: { failures } } });
    }
    if (conn.credit > 0) {
      const n = conn.credit;
      conn.credit = 0;
      if (!draining()) conn.send({ kind: { $case: 'credit', value: { n } } });
    }
  }

  function checkIdle() {
    if (busy > 0) return;
    if (current && current.unacked.size > 0) return;
    for (const w of idleWaiters) w();
  }

  function sendHeartbeats(conn: Connection) {
    if (conn.closed) return;
    const heartbeats: Heartbeat[] = [];
    for (const r of conn.running.values()) {
      if (r.aborted || (!autoHeartbeat && !r.beat)) continue;
      r.beat = false;
      heartbeats.push({ taskId: r.a.taskId, attempt: r.a.attempt, progress: r.progress });
    }
    if (heartbeats.length > 0) conn.send({ kind: { $case: 'heartbeats', value: { heartbeats } } });
  }

  function closeConnection(conn: Connection, why: string) {
    if (conn.closed) return;
    conn.closed = true;
    clearInterval(conn.heartbeatTimer);
    clearTimeout(conn.welcomeTimer);
    for (const r of conn.running.values()) r.abort(why);
    conn.unacked.clear();
    if (current === conn) current = undefined;
    conn.endedResolve();
    checkIdle();
  }

  function onMessage(conn: Connection, m: ConnectWorkerResponse) {
    const kind = m.kind;
    if (!kind) return;
    switch (kind.$case) {
      case 'welcome': {
        conn.welcomed = true;
        clearTimeout(conn.welcomeTimer);
        conn.routerId = kind.value.routerId;
        const d = kind.value.heartbeatInterval;
        if (d) conn.heartbeatMs = Math.max(50, d.seconds * 1000 + Math.round(d.nanos / 1e6));
        conn.heartbeatTimer = setInterval(() => sendHeartbeats(conn), conn.heartbeatMs);
        conn.heartbeatTimer.unref();
        if (!draining()) {
          phase = WorkerPhase.WORKER_PHASE_RUNNING;
          const free = concurrency - busy;
          if (free > 0) conn.send({ kind: { $case: 'credit', value: { n: free } } });
        } else {
          conn.send({ kind: { $case: 'drain', value: {} } });
        }
        logger.info({ router: conn.address, routerId: conn.routerId }, 'connected to router');
        for (const w of connectedWaiters) w();
        connectedWaiters.clear();
        return;
      }
      case 'assign':
        for (const a of kind.value.tasks) startAttempt(conn, a);
        return;
      case 'cancel':
        for (const ref of kind.value.attempts) {
          const r = conn.running.get(`${ref.taskId}:${ref.attempt}`);
          if (r) {
            logger.info(
              { taskId: ref.taskId, attempt: ref.attempt, reason: kind.value.reason },
              'attempt cancelled',
            );
            r.abort(kind.value.reason || 'CANCELLED');
          }
        }
        return;
      case 'ack':
        for (const e of kind.value.entries) {
          const key = `${e.taskId}:${e.attempt}`;
          const what = conn.unacked.get(key);
          if (what === undefined) continue;
          conn.unacked.delete(key);
          if (!e.accepted) {
            counters.refused++;
            logger.warn(
              { taskId: e.taskId, attempt: e.attempt, reason: e.reason },
              'router refused a report',
            );
          } else if (what === 'result') counters.completed++;
          else counters.failed++;
        }
        checkIdle();
        return;
    }
  }

  function report(r: Running, result: Result | undefined, failure: Failure | undefined) {
    const conn = r.conn;
    if (r.aborted || conn.closed) return;
    if (result) conn.results.push(result);
    if (failure) conn.failures.push(failure);
    conn.unacked.set(r.key, result ? 'result' : 'failure');
    scheduleFlush(conn);
  }

  function finished(r: Running) {
    busy--;
    r.conn.running.delete(r.key);
    const conn = current;
    if (conn && conn.welcomed && !conn.closed && !draining()) {
      conn.credit++;
      scheduleFlush(conn);
    }
    checkIdle();
  }

  function errorOf(err: unknown): TaskError {
    const e = err instanceof Error ? err : new Error(String(err));
    const code = (e as { code?: unknown }).code;
    return {
      code: typeof code === 'string' && code !== '' ? code : e.name || 'Error',
      message: e.message,
      retryable: !isBranded(err, NON_RETRYABLE),
      details: { stack: (e.stack ?? '').slice(0, 4000), host: labels.host, worker_id: workerId },
    };
  }

  function startAttempt(conn: Connection, a: Assignment) {
    const r = new Running(a, conn);
    conn.running.set(r.key, r);
    busy++;
    let pending: Promise<void> | undefined;
    try {
      pending = runAttempt(r);
    } catch (err) {
      pending = Promise.reject(err);
    }
    // A synchronous handler's attempt is over already: no promise to wait for.
    if (pending === undefined) finished(r);
    else {
      pending.then(
        () => finished(r),
        (err: unknown) => {
          logger.error({ err, taskId: a.taskId }, 'attempt bookkeeping failed');
          finished(r);
        },
      );
    }
  }

  /**
   * Runs one attempt and reports it. A synchronous handler's attempt ends before this returns
   * (undefined): its garbage dies before the next task of the Assign batch starts, and it costs
   * no promise. Otherwise the promise of the report.
   */
  function runAttempt(r: Running): Promise<void> | undefined {
    const a = r.a;
    const handler = handlers.get(a.stage);
    if (!handler) {
      report(r, undefined, {
        taskId: a.taskId,
        attempt: a.attempt,
        error: {
          code: 'NO_HANDLER',
          message: `this worker has no handler for stage ${a.stage}`,
          retryable: true,
          details: {},
        },
      });
      return undefined;
    }
    const inputType = a.input?.contentType || 'application/octet-stream';
    let input: unknown;
    try {
      input = codecFor(inputType).decode(a.input?.data ?? Buffer.alloc(0));
    } catch (err) {
      report(r, undefined, {
        taskId: a.taskId,
        attempt: a.attempt,
        error: { ...errorOf(err), code: 'DECODE_ERROR', retryable: false },
      });
      return undefined;
    }
    const ctx = new AttemptContext(r, inputType, logger);
    const call = () => handler(input, ctx);
    const reported = settle(
      // Called as a method: a hook may be an object that uses `this`.
      hooks.aroundTask ? () => hooks.aroundTask?.(ctx, call) : call,
      (out) => reportOutput(r, inputType, out),
      (err) => handlerFailed(r, err),
    );
    return reported instanceof Promise ? reported : undefined;
  }

  function handlerFailed(r: Running, err: unknown) {
    if (r.aborted) return;
    report(r, undefined, { taskId: r.a.taskId, attempt: r.a.attempt, error: errorOf(err) });
  }

  /** Encodes what the handler returned and reports it as the attempt's result. */
  function reportOutput(r: Running, inputType: string, out: unknown) {
    if (r.aborted) return;
    const a = r.a;
    let value = out;
    let contentType = options.outputContentType ?? inputType;
    let next: readonly string[] = [];
    if (isBranded<StageOutput>(out, STAGE_OUTPUT)) {
      value = out.value;
      contentType = out.contentType ?? contentType;
      next = out.next;
    }
    let data: Buffer;
    try {
      const codec = codecFor(contentType);
      data = codec.encode(value);
      contentType = codec.contentType;
    } catch (err) {
      report(r, undefined, {
        taskId: a.taskId,
        attempt: a.attempt,
        error: { ...errorOf(err), code: 'ENCODE_ERROR', retryable: false },
      });
      return;
    }
    report(
      r,
      { taskId: a.taskId, attempt: a.attempt, output: data, contentType, nextStages: [...next] },
      undefined,
    );
  }

  function open(address: string): Connection {
    const call = openBidiStream(
      clientFor(address),
      RouterServiceDefinition.fullName,
      RouterServiceDefinition.methods.connectWorker,
    );
    const conn = new Connection(address, call);
    current = conn;
    call.on('data', (m: ConnectWorkerResponse) => onMessage(conn, m));
    call.on('error', (err: grpc.ServiceError) => {
      if (!conn.closed && phase !== WorkerPhase.WORKER_PHASE_STOPPED) {
        logger.warn({ router: address, code: err.code, err: err.details }, 'router stream broke');
      }
      closeConnection(conn, 'STREAM_LOST');
    });
    call.on('end', () => closeConnection(conn, 'STREAM_ENDED'));
    call.on('status', () => closeConnection(conn, 'STREAM_ENDED'));
    conn.welcomeTimer = setTimeout(() => {
      logger.warn({ router: address }, 'no Welcome from the router; trying again');
      call.cancel();
      closeConnection(conn, 'NO_WELCOME');
    }, WELCOME_TIMEOUT_MS);
    conn.send({
      kind: {
        $case: 'hello',
        value: { workerId, stages, concurrency, protocolVersion: PROTOCOL_VERSION, labels },
      },
    });
    return conn;
  }

  async function connectLoop() {
    let i = 0;
    let backoff = 100;
    const signal = loopAbort.signal;
    while (!signal.aborted && !draining()) {
      const address = options.routers[i++ % options.routers.length]!;
      if (!draining()) phase = WorkerPhase.WORKER_PHASE_CONNECTING;
      const conn = open(address);
      await conn.ended;
      if (signal.aborted || draining()) break;
      if (conn.welcomed) backoff = 100;
      const wait = backoff / 2 + Math.random() * (backoff / 2);
      backoff = Math.min(backoff * 2, maxBackoff);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        signal.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
    }
  }

  const looping = connectLoop().catch((err: unknown) =>
    logger.error({ err }, 'connect loop failed'),
  );

  function finish() {
    phase = WorkerPhase.WORKER_PHASE_STOPPED;
    loopAbort.abort();
    const conn = current;
    if (conn) {
      conn.call.cancel();
      closeConnection(conn, 'SHUTDOWN');
    }
    for (const c of clients.values()) c.close();
    clients.clear();
    stoppedResolve();
  }

  let draining$: Promise<void> | undefined;

  return {
    workerId,
    get phase() {
      return phase;
    },
    info() {
      return {
        workerId,
        stages,
        concurrency,
        inFlight: busy,
        completed: counters.completed,
        failed: counters.failed,
        refused: counters.refused,
        connectedRouter: current?.welcomed ? current.address : '',
        phase,
        startedAt,
        labels,
      };
    },
    connected(signal) {
      if (current?.welcomed && !current.closed) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const done = () => {
          connectedWaiters.delete(done);
          resolve();
        };
        connectedWaiters.add(done);
        signal?.addEventListener(
          'abort',
          () => {
            connectedWaiters.delete(done);
            reject(signal.reason);
          },
          { once: true },
        );
      });
    },
    drain(timeoutMs = drainDefault) {
      if (phase === WorkerPhase.WORKER_PHASE_STOPPED) return stopped;
      draining$ ??= (async () => {
        phase = WorkerPhase.WORKER_PHASE_DRAINING;
        loopAbort.abort();
        const conn = current;
        if (conn?.welcomed) {
          flush(conn);
          conn.send({ kind: { $case: 'drain', value: {} } });
        }
        const idle = new Promise<void>((resolve) => {
          const w = () => {
            idleWaiters.delete(w);
            resolve();
          };
          idleWaiters.add(w);
          checkIdle();
        });
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<'expired'>(
          (r) => (timer = setTimeout(() => r('expired'), timeoutMs)),
        );
        const how = await Promise.race([idle.then(() => 'idle' as const), expired]);
        clearTimeout(timer);
        if (how === 'expired') logger.warn({ busy }, 'drain timed out; aborting what still runs');
        const c = current;
        if (c && !c.closed) {
          c.call.end();
          const t = setTimeout(() => c.call.cancel(), 2_000);
          await c.ended;
          clearTimeout(t);
        }
        finish();
        await looping;
      })();
      return draining$;
    },
    async stop() {
      if (phase === WorkerPhase.WORKER_PHASE_STOPPED) return;
      finish();
      await looping;
    },
    stopped,
  };
}
