import type { ClientDuplexStream } from '@grpc/grpc-js';
import type {
  ApplyTransitionsRequest,
  ApplyTransitionsResponse,
  TransitionOutcome,
  TransitionWrite,
} from '../../gen/dsat/status/v1/status';
import type { Logger } from '../shared/logger';

/** Called once with the outcome of a write: committed (code 0), refused, or given up (14). */
export type OutcomeHandler<C> = (outcome: TransitionOutcome, context: C) => void;

export type ApplyStream = ClientDuplexStream<ApplyTransitionsRequest, ApplyTransitionsResponse>;

export interface StatusWriterOptions {
  /** Opens a new ApplyTransitions stream (after a break, again). */
  readonly connect: () => ApplyStream;
  /**
   * Resolves once a connection to the status service is up. Without it a stream is opened at
   * once, and writes put on a stream that never connected count as sent: they can no longer be
   * withdrawn, though they never left.
   */
  readonly ready?: () => Promise<void>;
  readonly logger: Logger;
  /**
   * Most messages in flight at once; more writes wait and ride in the next, larger message. A
   * message goes while another is in flight only when it is full (`maxMessageBytes`).
   */
  readonly window?: number;
  /** Most bytes of writes in one message (payloads dominate), under the gRPC message limit. */
  readonly maxMessageBytes?: number;
}

/**
 * The router's one long-lived write stream to the status service. Every write queued within a
 * tick goes out in one message. While a message is in flight, writes wait for its answer and
 * then go together: the store commits whatever arrives during a commit in the next one anyway,
 * so sending them at once would cost messages (and small commits) and gain nothing. Only full
 * messages are pipelined, up to the window. Writes are sent, and re-sent after a broken stream,
 * strictly in the order they were queued, so the store applies a router's writes in that order:
 * a requeue queued after a dispatch is applied after it. Writes are idempotent by transition_id,
 * so re-sending one that was committed is answered OK again.
 */
export interface StatusWriter {
  /**
   * Queues a write; `onOutcome` runs once when it is committed or refused. Never awaited here.
   * A write whose `abandoned` signal (its caller's call) has fired before it was first sent is
   * withdrawn instead: never sent, answered CANCELLED (CALLER_GONE).
   */
  write<C>(
    write: TransitionWrite,
    onOutcome?: OutcomeHandler<C>,
    context?: C,
    abandoned?: AbortSignal,
  ): void;
  /** Withdraws every queued write never sent whose caller is gone; returns how many. */
  withdrawAbandoned(): number;
  /** Queues writes (one atomic message if they fit) and resolves with their outcomes, in order. */
  commit(writes: readonly TransitionWrite[]): Promise<TransitionOutcome[]>;
  /** Writes queued or in flight. */
  readonly pending: number;
  /** Their bytes, payloads included: what waits in memory while the status service lags or is away. */
  readonly pendingBytes: number;
  /** Waits up to `graceMs` for pending writes, then gives the rest up with code UNAVAILABLE. */
  close(graceMs: number): Promise<void>;
}

interface Pending {
  readonly write: TransitionWrite;
  readonly handler: OutcomeHandler<unknown> | undefined;
  readonly context: unknown;
  readonly bytes: number;
  readonly abandoned: AbortSignal | undefined;
  /** Sent at least once: it may be committed, so it is never withdrawn. */
  sent: boolean;
}

const CANCELLED = 1;
const UNAVAILABLE = 14;
const WRITE_OVERHEAD = 160;

export function createStatusWriter(options: StatusWriterOptions): StatusWriter {
  const { connect, logger } = options;
  const window = options.window ?? 4;
  const maxBytes = options.maxMessageBytes ?? 2 * 1024 * 1024;

  let queue: Pending[] = [];
  let head = 0;
  /** Messages sent and not answered, oldest first: the status service answers each, in order. */
  let sent: Pending[][] = [];
  let inflightWrites = 0;
  let inflightBytes = 0;
  let stream: ApplyStream | undefined;
  let flushScheduled = false;
  let closed = false;
  let backoffMs = 100;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let connecting = false;
  let idleWaiters: (() => void)[] = [];
  let pendingBytes = 0;

  const queued = () => queue.length - head;
  const pendingCount = () => queued() + inflightWrites;

  function settle(p: Pending, outcome: TransitionOutcome) {
    if (!p.handler) return;
    try {
      p.handler(outcome, p.context);
    } catch (err) {
      logger.error({ err, transitionId: p.write.transitionId }, 'write outcome handler failed');
    }
  }

  function checkIdle() {
    if (pendingCount() > 0 || idleWaiters.length === 0) return;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  }

  /** The answer to the oldest message sent: one outcome per write, in the writes' order. */
  function onResponse(res: ApplyTransitionsResponse) {
    backoffMs = 100;
    const writes = sent.shift();
    if (writes === undefined) return;
    inflightWrites -= writes.length;
    const outcomes = res.outcomes;
    // Positional outcomes (OK, ids left out) can be matched only if the answer has them all.
    const complete = outcomes.length === writes.length;
    for (let i = 0; i < writes.length; i++) {
      const p = writes[i]!;
      pendingBytes -= p.bytes;
      inflightBytes -= p.bytes;
      const id = p.write.transitionId;
      let outcome = outcomes[i];
      if (complete && outcome !== undefined && outcome.transitionId === '' && outcome.code === 0) {
        outcome.transitionId = id;
        outcome.taskId = p.write.taskId;
      }
      if (outcome?.transitionId !== id) outcome = outcomes.find((o) => o.transitionId === id);
      outcome ??= givenUp(p.write, 'the status service answered without this write');
      // Expected refusals (a moved task, an unknown one, a full backlog) are the caller's to report.
      if (outcome.code !== 0 && outcome.code !== 9 && outcome.code !== 5 && outcome.code !== 8) {
        logger.warn(
          { transitionId: id, code: outcome.code, reason: outcome.reason },
          `status refused a write: ${outcome.message}`,
        );
      }
      settle(p, outcome);
    }
    if (queued() > 0) flush();
    checkIdle();
  }

  function onBroken(stream_: ApplyStream | undefined, err: unknown) {
    if (stream !== stream_) return;
    stream = undefined;
    // Everything sent and not answered goes back in front, in its original order.
    const resend = sent.flat();
    sent = [];
    inflightWrites = 0;
    inflightBytes = 0;
    queue = resend.concat(queue.slice(head));
    head = 0;
    if (closed) return;
    const wait = backoffMs;
    backoffMs = Math.min(backoffMs * 2, 2_000);
    // With nothing pending (a status service restarting or shutting down) nothing is at risk.
    logger[pendingCount() > 0 ? 'warn' : 'info'](
      {
        err: err instanceof Error ? err.message : String(err),
        pending: pendingCount(),
        retryInMs: wait,
      },
      'status write stream broke; re-sending pending writes after a pause',
    );
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      open();
    }, wait);
  }

  /** A new stream, once the connection is up, then whatever waits is sent. */
  function open() {
    if (closed || stream || connecting) return;
    if (!options.ready) return openNow();
    connecting = true;
    options.ready().then(
      () => {
        connecting = false;
        openNow();
      },
      (err: unknown) => {
        connecting = false;
        if (!closed) onBroken(undefined, err);
      },
    );
  }

  function openNow() {
    if (closed || stream) return;
    const s = connect();
    stream = s;
    s.on('data', onResponse);
    s.on('error', (err) => onBroken(s, err));
    s.on('end', () => onBroken(s, new Error('stream ended')));
    flush();
  }

  function flush() {
    flushScheduled = false;
    if (!stream) {
      if (!reconnectTimer) open();
      return;
    }
    while (queued() > 0 && sent.length < window) {
      if (sent.length > 0 && pendingBytes - inflightBytes < maxBytes) break;
      const writes: Pending[] = [];
      let bytes = 0;
      while (queued() > 0) {
        const p = queue[head]!;
        if (!p.sent && p.abandoned?.aborted) {
          head++;
          withdraw(p);
          continue;
        }
        if (writes.length > 0 && bytes + p.bytes > maxBytes) break;
        head++;
        p.sent = true;
        writes.push(p);
        bytes += p.bytes;
      }
      if (writes.length === 0) break;
      sent.push(writes);
      inflightWrites += writes.length;
      inflightBytes += bytes;
      stream.write({ writes: writes.map((p) => p.write), positionalOutcomes: true });
    }
    checkIdle(); // writes withdrawn above may have been the last
    if (head > 1024 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
  }

  function withdraw(p: Pending) {
    pendingBytes -= p.bytes;
    settle(p, {
      ...givenUp(
        p.write,
        'the caller gave up before the write was sent to the status service; nothing was written',
        'CALLER_GONE',
      ),
      code: CANCELLED,
    });
  }

  function withdrawAbandoned(): number {
    const kept: Pending[] = [];
    let withdrawn = 0;
    for (let i = head; i < queue.length; i++) {
      const p = queue[i]!;
      if (!p.sent && p.abandoned?.aborted) {
        withdraw(p);
        withdrawn++;
      } else kept.push(p);
    }
    if (withdrawn > 0) {
      queue = kept;
      head = 0;
      checkIdle();
    }
    return withdrawn;
  }

  function scheduleFlush() {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  }

  function write<C>(
    w: TransitionWrite,
    onOutcome?: OutcomeHandler<C>,
    context?: C,
    abandoned?: AbortSignal,
  ) {
    const p: Pending = {
      write: w,
      handler: onOutcome as OutcomeHandler<unknown> | undefined,
      context,
      bytes: WRITE_OVERHEAD + (w.payload?.data.length ?? 0) + (w.progress?.details.length ?? 0),
      abandoned,
      sent: false,
    };
    if (closed) {
      settle(p, givenUp(w, 'the router is shutting down'));
      return;
    }
    queue.push(p);
    pendingBytes += p.bytes;
    scheduleFlush();
  }

  return {
    write,
    withdrawAbandoned,
    commit(writes) {
      return new Promise((resolve) => {
        const outcomes: TransitionOutcome[] = new Array<TransitionOutcome>(writes.length);
        let left = writes.length;
        if (left === 0) return resolve(outcomes);
        writes.forEach((w, i) =>
          write(w, (o: TransitionOutcome) => {
            outcomes[i] = o;
            if (--left === 0) resolve(outcomes);
          }),
        );
      });
    },
    get pending() {
      return pendingCount();
    },
    get pendingBytes() {
      return pendingBytes;
    },
    async close(graceMs) {
      if (pendingCount() > 0) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          idleWaiters.push(resolve);
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
      }
      closed = true;
      clearTimeout(reconnectTimer);
      const left = [...sent.flat(), ...queue.slice(head)];
      queue = [];
      head = 0;
      sent = [];
      inflightWrites = 0;
      inflightBytes = 0;
      pendingBytes = 0;
      const s = stream;
      stream = undefined;
      s?.removeAllListeners();
      s?.on('error', () => undefined);
      s?.cancel();
      for (const p of left)
        settle(p, givenUp(p.write, 'the router shut down before the write was answered'));
    },
  };
}

export function givenUp(
  w: TransitionWrite,
  message: string,
  reason = 'ROUTER_SHUTTING_DOWN',
): TransitionOutcome {
  return {
    transitionId: w.transitionId,
    taskId: w.taskId,
    code: UNAVAILABLE,
    reason,
    message,
    revision: 0,
    seq: 0,
    duplicate: false,
  };
}
