import crypto from 'node:crypto';
import { AbortError } from 'abort-controller-x';
import type {
  AckEntry,
  Assignment,
  AttemptRef,
  ConnectWorkerRequest,
  ConnectWorkerResponse,
  Hello,
} from '../../gen/dsat/router/v1/router';
import { AsyncQueue } from '../shared/async-queue';
import { msToDuration } from '../shared/duration';
import { DsatError, invalidArgument } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { Dispatcher } from './dispatcher';
import type { HeldTask, WorkerLink } from './held-task';

export const PROTOCOL_VERSION = 1;
const WORKER_ID = /^[A-Za-z0-9._:@/-]{1,128}$/;
export const STAGE_NAME = /^[a-z0-9_-]{1,63}$/;

export interface WorkerSessionOptions {
  readonly dispatcher: Dispatcher;
  readonly routerId: string;
  readonly heartbeatIntervalMs: number;
  readonly serves: (stage: string) => boolean;
  readonly logger: Logger;
  /** Sessions open now, for shutdown and load reports. */
  readonly sessions?: Set<WorkerSession>;
  /**
   * The worker id the client certificate names (`spiffe://…/worker/<id>`, under mTLS): Hello must
   * claim this one, so a worker cannot take, or report on, the tasks of another.
   */
  readonly certifiedWorkerId?: string;
}

/**
 * One ConnectWorker stream: checks Hello, answers Welcome, turns the worker's messages into
 * dispatcher calls, and batches what goes back (one Assign per dispatch pass, one Ack and one
 * Cancel message per tick for everything ready).
 */
export class WorkerSession implements WorkerLink {
  readonly sessionId = crypto.randomUUID().slice(0, 13);
  workerId = '';
  stages: readonly string[] = [];
  credit = 0;
  draining = false;
  readonly holding = new Map<string, HeldTask>();
  readonly outbox = new AsyncQueue<ConnectWorkerResponse>();
  private hello: Hello | undefined;
  private assignBuf: Assignment[] = [];
  private ackBuf: AckEntry[] = [];
  private cancelBuf = new Map<string, AttemptRef[]>();
  private flushScheduled = false;
  private closed = false;
  private detached = false;
  private readonly logger: Logger;

  constructor(private readonly options: WorkerSessionOptions) {
    this.logger = options.logger;
  }

  /** Handles one message from the worker; throws a DsatError that ends the stream. */
  receive(m: ConnectWorkerRequest): void {
    const kind = m.kind;
    if (kind === undefined) throw invalidArgument('kind', 'the message is empty', 'EMPTY_MESSAGE');
    if (this.hello === undefined) {
      if (kind.$case !== 'hello') {
        throw invalidArgument(
          'hello',
          `the first message must be hello, not ${kind.$case}`,
          'HELLO_REQUIRED',
        );
      }
      this.start(kind.value);
      return;
    }
    const d = this.options.dispatcher;
    switch (kind.$case) {
      case 'credit':
        d.grantCredit(this, kind.value.n);
        return;
      case 'heartbeats':
        d.onHeartbeats(this, kind.value.heartbeats);
        return;
      case 'results':
        d.onResults(this, kind.value.results);
        if (kind.value.credit > 0) d.grantCredit(this, kind.value.credit);
        return;
      case 'failures':
        d.onFailures(this, kind.value.failures);
        return;
      case 'drain':
        this.logger.info({ workerId: this.workerId, sessionId: this.sessionId }, 'worker drains');
        d.drainLink(this);
        return;
      case 'hello':
        throw invalidArgument('hello', 'hello was already sent on this stream', 'HELLO_REPEATED');
    }
  }

  private start(hello: Hello) {
    checkHello(hello, this.options.serves);
    const certified = this.options.certifiedWorkerId;
    if (certified !== undefined && hello.workerId !== certified) {
      throw new DsatError(
        'PERMISSION_DENIED',
        'WORKER_ID_NOT_CERTIFIED',
        `hello.worker_id: ${JSON.stringify(hello.workerId)} is not the worker its certificate names (${JSON.stringify(certified)})`,
        { field: 'hello.worker_id' },
      );
    }
    this.hello = hello;
    this.workerId = hello.workerId;
    this.stages = [...new Set(hello.stages)];
    this.options.sessions?.add(this);
    this.options.dispatcher.addLink(this);
    const ms = this.options.heartbeatIntervalMs;
    this.outbox.push({
      kind: {
        $case: 'welcome',
        value: {
          routerId: this.options.routerId,
          sessionId: this.sessionId,
          protocolVersion: PROTOCOL_VERSION,
          heartbeatInterval: msToDuration(ms),
        },
      },
    });
    this.logger.info(
      {
        workerId: this.workerId,
        sessionId: this.sessionId,
        stages: this.stages,
        concurrency: hello.concurrency,
      },
      'worker connected',
    );
  }

  // ---- WorkerLink -------------------------------------------------------------------------------

  assign(a: Assignment): void {
    this.assignBuf.push(a);
  }

  flush(): void {
    if (this.assignBuf.length === 0) return;
    // Acks first: an Ack for (task, attempt 1) at one stage must reach the worker before the
    // Assign of (task, attempt 1) at the next stage, since reports do not name the stage.
    if (this.ackBuf.length > 0 || this.cancelBuf.size > 0) this.flushReplies();
    const tasks = this.assignBuf;
    this.assignBuf = [];
    if (!this.closed) this.outbox.push({ kind: { $case: 'assign', value: { tasks } } });
  }

  cancel(ref: AttemptRef, reason: string): void {
    if (this.closed) return;
    let refs = this.cancelBuf.get(reason);
    if (!refs) {
      refs = [];
      this.cancelBuf.set(reason, refs);
    }
    refs.push(ref);
    this.scheduleFlush();
  }

  ack(entry: AckEntry): void {
    if (this.closed) return;
    this.ackBuf.push(entry);
    this.scheduleFlush();
  }

  private scheduleFlush() {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flushReplies);
  }

  private readonly flushReplies = () => {
    this.flushScheduled = false;
    if (this.closed) return;
    for (const [reason, attempts] of this.cancelBuf) {
      this.outbox.push({ kind: { $case: 'cancel', value: { attempts, reason } } });
    }
    this.cancelBuf.clear();
    if (this.ackBuf.length > 0) {
      const entries = this.ackBuf;
      this.ackBuf = [];
      this.outbox.push({ kind: { $case: 'ack', value: { entries } } });
    }
  };

  // ---- the stream's end -------------------------------------------------------------------------

  /** The worker half-closed (after its drain): answer what is pending and end the stream. */
  inputEnded(): void {
    this.detach();
    this.flushReplies();
    this.outbox.end();
  }

  /** The stream is over, however it ended: the dispatcher requeues what was still running. */
  close(): void {
    this.detach();
    this.closed = true;
    this.outbox.end();
  }

  private detach() {
    if (this.hello === undefined || this.detached) return;
    this.detached = true;
    this.options.sessions?.delete(this);
    this.options.dispatcher.removeLink(this);
  }
}

function checkHello(hello: Hello, serves: (stage: string) => boolean) {
  if (hello.protocolVersion !== PROTOCOL_VERSION) {
    throw new DsatError(
      'FAILED_PRECONDITION',
      'PROTOCOL_VERSION_UNSUPPORTED',
      `hello.protocol_version: this router speaks version ${PROTOCOL_VERSION}, not ${hello.protocolVersion}`,
      { field: 'hello.protocol_version', metadata: { supported: String(PROTOCOL_VERSION) } },
    );
  }
  if (!WORKER_ID.test(hello.workerId)) {
    throw invalidArgument('hello.worker_id', 'must be 1 to 128 of [A-Za-z0-9._:@/-]');
  }
  if (hello.stages.length === 0 || hello.stages.length > 256) {
    throw invalidArgument('hello.stages', 'must name 1 to 256 stages');
  }
  for (const s of hello.stages) {
    if (!STAGE_NAME.test(s)) {
      throw invalidArgument(
        'hello.stages',
        `${JSON.stringify(s.slice(0, 80))} is not a stage name`,
      );
    }
    if (!serves(s)) {
      throw new DsatError(
        'INVALID_ARGUMENT',
        'STAGE_NOT_SERVED',
        `hello.stages: this router does not serve stage ${s}`,
        {
          field: 'hello.stages',
          metadata: { stage: s },
        },
      );
    }
  }
  if (hello.concurrency < 1 || hello.concurrency > 100_000) {
    throw invalidArgument('hello.concurrency', 'must be 1 to 100000');
  }
}

/**
 * The ConnectWorker handler body: runs a session over the request stream and yields its outbox.
 * `signal` is the call's: aborted when the client goes away or the server terminates streams.
 */
export async function* runWorkerSession(
  requests: AsyncIterable<ConnectWorkerRequest>,
  signal: AbortSignal,
  options: WorkerSessionOptions,
): AsyncGenerator<ConnectWorkerResponse> {
  const session = new WorkerSession(options);
  const onAbort = () => session.outbox.fail(new AbortError());
  if (signal.aborted) onAbort();
  signal.addEventListener('abort', onAbort);
  const reading = (async () => {
    try {
      for await (const m of requests) session.receive(m);
      session.inputEnded();
    } catch (err) {
      session.outbox.fail(err);
    }
  })();
  try {
    yield* session.outbox;
  } finally {
    signal.removeEventListener('abort', onAbort);
    session.close();
    void reading;
  }
}
