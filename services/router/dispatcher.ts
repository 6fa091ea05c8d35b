import { SPAN_NAMES, SpanKind, spanTraceparent, startTaskSpan } from '../shared/task-tracing';
import type { Failure, Heartbeat, Result, StageLoad } from '../../gen/dsat/router/v1/router';
import type { TransitionOutcome } from '../../gen/dsat/status/v1/status';
import type { Payload, TaskError } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { knownContentType } from '../shared/content-types';
import type { Logger } from '../shared/logger';
import type { HeldTaskInit, WorkerLink } from './held-task';
import { attemptKey, HeldTask } from './held-task';
import type { CompiledStage } from './pipeline-registry';
import { ReadyQueue } from './ready-queue';
import { progressViolation } from '../shared/task-limits';
import { cutWorkerError } from './report-limits';
import type { FailurePlan } from './retry-policy';
import { FAILURE_REASONS, planFailure, planLeaseLost, planRequeue } from './retry-policy';
import { StageStats } from './stage-stats';
import type { StagePlan } from './stage-routing';
import { planPublish, planStageDone, queuedByPlan } from './stage-routing';
import type { StatusWriter } from './status-writer';
import type { TransitionIds } from './transition-write';
import { transitionWrite } from './transition-write';

export type DispatchStrategy = 'round-robin' | 'least-in-flight';

export interface DispatcherOptions {
  readonly writer: StatusWriter;
  readonly ids: TransitionIds;
  readonly logger: Logger;
  readonly strategy?: DispatchStrategy;
  /** Whether this router serves a stage; tasks at other stages are handed to `forward`. */
  readonly serves: (stage: string) => boolean;
  /** Tasks durably queued at stages another router serves. Default: left to that router's feed. */
  readonly forward?: (tasks: readonly HeldTaskInit[]) => void;
  /** Largest output a result may carry; bigger ones fail the task (PAYLOAD_TOO_LARGE). */
  readonly maxPayloadSize?: number;
  /** How often, at most, a running attempt's progress is stored. */
  readonly progressCheckpointMs?: number;
  /** Monotonic milliseconds. */
  readonly now?: () => number;
  /** How often the lease and progress sweep runs; 0 disables its timer (tests call sweep()). */
  readonly sweepIntervalMs?: number;
  /** Told of every attempt that ended the stage, done or failed, with its seconds since dispatch. */
  readonly onAttemptEnded?: (stage: string, ok: boolean, seconds: number) => void;
}

interface StageState {
  readonly name: string;
  readonly queue: ReadyQueue<HeldTask>;
  links: WorkerLink[];
  /** Round-robin position in `links`. */
  rr: number;
  readonly stats: StageStats;
  /**
   * The pipeline's `concurrency` for the stage (of the task queued last: pipelines that share a
   * stage name share its queue): no more attempts than this run at once.
   */
  limit: number;
}

/** The answer a report got, kept a while so that a repeated report gets the same answer. */
interface PastReport {
  readonly accepted: boolean;
  readonly reason: string;
}

/** A report being written: its plan's outcomes arrive one by one, then the worker is answered. */
interface ReportWrite {
  readonly task: HeldTask;
  /** The stream to answer; none for a PUBLISH stage's move. */
  readonly link: WorkerLink | undefined;
  plan: StagePlan | FailurePlan;
  outcomes: TransitionOutcome[];
  left: number;
  readonly kind: 'result' | 'failure';
  /** The task at its next stage, held (and maybe running) before this report is committed. */
  ahead?: HeldTask;
}

const RECENT_REPORTS = 100_000;
const EMPTY_INPUT: Payload = { data: Buffer.alloc(0), contentType: '' };
const MAX_CREDIT = 100_000;

export const CANCEL_REASONS = {
  requested: 'CANCEL_REQUESTED',
  leaseLost: 'LEASE_LOST',
  dispatchRefused: 'DISPATCH_REFUSED',
  superseded: 'SUPERSEDED',
  /** A heartbeat's progress broke the limits: the task failed with this code. */
  invalidProgress: 'INVALID_PROGRESS',
} as const;

/**
 * The router's dispatch: the ready queue of every stage it serves, the worker streams with their
 * credit, and every attempt in flight. A task goes only to a worker with free credit (round robin
 * or least in flight), DISPATCHED and RUNNING are written without waiting, and a report is acked
 * only once its writes are committed; a result's next stage starts before that (holdAhead).
 * Everything here runs on the event loop without awaiting: writes complete through callbacks, and
 * dispatch runs once per tick for everything that is ready.
 */
export class Dispatcher {
  private readonly stages = new Map<string, StageState>();
  private readonly held = new Map<string, HeldTask>();
  private readonly links = new Set<WorkerLink>();
  private readonly recent = new Map<string, PastReport>();
  private readonly writer: StatusWriter;
  private readonly ids: TransitionIds;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly strategy: DispatchStrategy;
  private readonly checkpointMs: number;
  private readonly maxPayload: number;
  /** The pass scheduled for the next turn; a pass run before it (after results) cancels it. */
  private scheduledPass: NodeJS.Immediate | undefined;
  private stopped = false;
  private stopReason: string | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  /** Reports for attempts this router does not hold (stale or not assigned to the stream). */
  staleReports = 0;
  leaseLosses = 0;
  /** Next stages held ahead of their move's commit, by how the move ended. */
  readonly ahead = { committed: 0, calledOff: 0 };

  constructor(private readonly options: DispatcherOptions) {
    this.writer = options.writer;
    this.ids = options.ids;
    this.logger = options.logger;
    this.now = options.now ?? (() => performance.now());
    this.strategy = options.strategy ?? 'round-robin';
    this.checkpointMs = options.progressCheckpointMs ?? 5_000;
    this.maxPayload = options.maxPayloadSize ?? Number.MAX_SAFE_INTEGER;
    const every = options.sweepIntervalMs ?? 250;
    if (every > 0) {
      this.sweepTimer = setInterval(() => this.sweep(), every);
      this.sweepTimer.unref();
    }
  }

  // ---- worker streams -----------------------------------------------------------------------

  addLink(link: WorkerLink): void {
    this.links.add(link);
    for (const s of link.stages) this.stage(s).links.push(link);
  }

  grantCredit(link: WorkerLink, n: number): void {
    if (!this.links.has(link)) return;
    link.credit = Math.min(MAX_CREDIT, link.credit + n);
    if (!link.draining && n > 0) this.scheduleDispatch();
  }

  drainLink(link: WorkerLink): void {
    link.draining = true;
  }

  /** A stream ended: its running attempts are queued again at once (WORKER_LOST). */
  removeLink(link: WorkerLink, reason: string = FAILURE_REASONS.workerLost): void {
    if (!this.links.delete(link)) return;
    if (this.stopReason !== undefined) reason = this.stopReason;
    link.draining = true;
    for (const s of link.stages) {
      const st = this.stages.get(s);
      if (!st) continue;
      st.links = st.links.filter((l) => l !== link);
      if (st.rr >= st.links.length) st.rr = 0;
    }
    let requeued = 0;
    for (const t of [...link.holding.values()]) {
      if (t.phase !== 'running') continue;
      this.release(t);
      this.requeue(t, TaskState.TASK_STATE_RUNNING, reason);
      requeued++;
    }
    if (requeued > 0) {
      this.logger.info(
        { workerId: link.workerId, sessionId: link.sessionId, requeued, reason },
        'worker stream ended with attempts in flight; queued them again',
      );
    }
  }

  // ---- tasks --------------------------------------------------------------------------------

  /**
   * Holds a task that is durably QUEUED at one of this router's stages. A task already held at
   * the same stage and the same or a newer attempt is left alone (false). A PUBLISH stage moves
   * on at once, without a worker.
   */
  enqueue(init: HeldTaskInit): boolean {
    const existing = this.held.get(init.taskId);
    if (existing) {
      if (existing.stage.name === init.stage.name && existing.attempt >= init.attempt) return false;
      this.drop(init.taskId, CANCEL_REASONS.superseded);
    }
    const t = new HeldTask(init);
    this.held.set(init.taskId, t);
    if (t.stage.publish) {
      this.publish(t);
      return true;
    }
    this.queue(t);
    this.scheduleDispatch();
    return true;
  }

  /**
   * Takes over an attempt that no live stream runs (found DISPATCHED or RUNNING when the router
   * started): queued again with attempt + 1 and `reason`, or dead-lettered when it was the last.
   */
  adopt(
    init: HeldTaskInit,
    from: TaskState.TASK_STATE_RUNNING | TaskState.TASK_STATE_DISPATCHED,
    reason: string,
  ): void {
    this.requeue(new HeldTask(init), from, reason);
  }

  /** Whether the task is held, at which stage and attempt. */
  holding(taskId: string): { stage: string; attempt: number } | undefined {
    const t = this.held.get(taskId);
    return t && { stage: t.stage.name, attempt: t.attempt };
  }

  /**
   * Forgets a task someone else moved (cancelled, timed out, requeued elsewhere): out of its
   * queue, or its worker is told to abort (`reason`). A report being written is left to its write,
   * which the store will refuse.
   */
  drop(taskId: string, reason: string): boolean {
    const t = this.held.get(taskId);
    if (!t) return false;
    if (t.phase === 'reporting') return false;
    this.held.delete(taskId);
    if (t.phase === 'queued') {
      this.stages.get(t.stage.name)?.queue.remove(t);
      return true;
    }
    const link = t.link!;
    this.release(t);
    this.remember(t, false, reason);
    link.cancel({ taskId: t.taskId, attempt: t.attempt }, reason);
    return true;
  }

  /**
   * Stops dispatching (shutdown): queued tasks stay QUEUED in the store for the next router, and
   * attempts whose streams end from now on are requeued with `reason`.
   */
  stop(reason: string = FAILURE_REASONS.routerShutdown): void {
    this.stopped = true;
    this.stopReason = reason;
    clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  // ---- dispatch -----------------------------------------------------------------------------

  /** Makes a stage appear in the load report before any task or worker. */
  ensureStage(name: string): void {
    this.stage(name);
  }

  private stage(name: string): StageState {
    let s = this.stages.get(name);
    if (!s) {
      s = {
        name,
        queue: new ReadyQueue<HeldTask>(),
        links: [],
        rr: 0,
        stats: new StageStats(),
        limit: Number.POSITIVE_INFINITY,
      };
      this.stages.set(name, s);
    }
    return s;
  }

  private queue(t: HeldTask) {
    const s = this.stage(t.stage.name);
    s.limit = t.stage.concurrency;
    s.queue.push(t);
  }

  private attemptEnded(t: HeldTask, ok: boolean) {
    this.stage(t.stage.name).stats.finished(ok);
    try {
      this.options.onAttemptEnded?.(t.stage.name, ok, (this.now() - t.startedAt) / 1000);
    } catch {
      // Metrics must never disturb dispatch.
    }
  }

  /** An attempt of the stage stopped running: a stage held at its limit may dispatch again. */
  private leftStage(s: StageState) {
    s.stats.inFlight--;
    if (s.queue.size > 0 && s.stats.inFlight < s.limit && s.limit !== Number.POSITIVE_INFINITY) {
      this.scheduleDispatch();
    }
  }

  private scheduleDispatch() {
    if (this.scheduledPass !== undefined || this.stopped) return;
    this.scheduledPass = setImmediate(this.dispatchPass);
  }

  private readonly dispatchPass = () => {
    clearImmediate(this.scheduledPass);
    this.scheduledPass = undefined;
    if (this.stopped) return;
    const touched = new Set<WorkerLink>();
    let active: StageState[] = [];
    for (const s of this.stages.values())
      if (s.queue.size > 0 && s.links.length > 0 && s.stats.inFlight < s.limit) active.push(s);
    // One task per stage per turn, so that a worker serving several stages is shared fairly.
    while (active.length > 0) {
      const still: StageState[] = [];
      for (const s of active) {
        let link = this.pick(s);
        if (link === undefined) continue;
        const t = s.queue.shift()!;
        // Reports and Acks name (task_id, attempt) only: a stream awaiting the Ack of a task's
        // report at one stage cannot also run the same attempt number at the next.
        if (link.holding.has(t.attemptKey)) {
          link = this.pick(s, link);
          if (link === undefined) {
            t.parked = true;
            if (s.queue.size > 0) still.push(s);
            continue;
          }
        }
        this.start(t, link, s);
        touched.add(link);
        if (s.queue.size > 0 && s.stats.inFlight < s.limit) still.push(s);
      }
      active = still;
    }
    for (const link of touched) link.flush();
  };

  /** A stream of the stage with free credit, other than `avoid`. */
  private pick(s: StageState, avoid?: WorkerLink): WorkerLink | undefined {
    const links = s.links;
    const n = links.length;
    if (this.strategy === 'least-in-flight') {
      let best: WorkerLink | undefined;
      let bestAt = 0;
      for (let i = 0; i < n; i++) {
        const at = (s.rr + i) % n;
        const l = links[at]!;
        if (l.credit <= 0 || l.draining || l === avoid) continue;
        if (best === undefined || l.holding.size < best.holding.size) {
          best = l;
          bestAt = at;
        }
      }
      if (best !== undefined) s.rr = (bestAt + 1) % n;
      return best;
    }
    for (let i = 0; i < n; i++) {
      const at = (s.rr + i) % n;
      const l = links[at]!;
      if (l.credit > 0 && !l.draining && l !== avoid) {
        s.rr = (at + 1) % n;
        return l;
      }
    }
    return undefined;
  }

  private start(t: HeldTask, link: WorkerLink, s: StageState) {
    t.phase = 'running';
    t.link = link;
    t.lastBeat = this.now();
    t.startedAt = t.lastBeat;
    t.progressStoredAt = t.lastBeat;
    if (t.stage.runTimeoutMs > 0) t.deadline = new Date(Date.now() + t.stage.runTimeoutMs);
    link.credit--;
    link.holding.set(t.attemptKey, t);
    s.stats.inFlight++;
    link.assign(t.toAssignment(dispatchTraceparent(t, link.workerId)));
    const w = link.workerId;
    const ids = this.ids;
    this.writer.write(
      transitionWrite(
        ids.next(),
        t.taskId,
        TaskState.TASK_STATE_QUEUED,
        t.attempt,
        TaskState.TASK_STATE_DISPATCHED,
        t.attempt,
        '',
        w,
      ),
      this.onDispatchOutcome,
      t,
    );
    this.writer.write(
      transitionWrite(
        ids.next(),
        t.taskId,
        TaskState.TASK_STATE_DISPATCHED,
        t.attempt,
        TaskState.TASK_STATE_RUNNING,
        t.attempt,
        '',
        w,
      ),
      this.onDispatchOutcome,
      t,
    );
  }

  /** The store refused a dispatch: the task moved meanwhile (cancelled, say); abort the attempt. */
  private readonly onDispatchOutcome = (o: TransitionOutcome, t: HeldTask) => {
    if (o.code === 0 || o.code === 14) return;
    if (this.held.get(t.taskId) !== t || t.phase !== 'running') return;
    this.logger.debug(
      { taskId: t.taskId, attempt: t.attempt, reason: o.reason },
      'dispatch refused by the store; aborting the attempt',
    );
    this.drop(t.taskId, CANCEL_REASONS.dispatchRefused);
  };

  /** Takes a running attempt off its stream's books (credit was used; the worker re-grants). */
  private release(t: HeldTask) {
    if (t.link) t.link.holding.delete(t.attemptKey);
    if (t.phase === 'running') {
      const s = this.stages.get(t.stage.name);
      if (s) this.leftStage(s);
    }
  }

  private requeue(
    t: HeldTask,
    from: TaskState.TASK_STATE_RUNNING | TaskState.TASK_STATE_DISPATCHED,
    reason: string,
  ) {
    if (this.held.get(t.taskId) === t) this.held.delete(t.taskId);
    this.remember(t, false, 'STALE_ATTEMPT');
    const plan = planRequeue(t, from, reason, t.link?.workerId ?? '', this.ids.next);
    if (plan.kind !== 'requeued') {
      this.attemptEnded(t, false);
      for (const w of plan.writes) this.writer.write(w);
      return;
    }
    const next = t.nextAttempt();
    if (!this.held.has(next.taskId) && !this.stopped) {
      this.held.set(next.taskId, next);
      this.queue(next);
      this.scheduleDispatch();
    }
    this.writer.write(plan.writes[0]!, this.onRequeueOutcome, next);
  }

  private readonly onRequeueOutcome = (o: TransitionOutcome, t: HeldTask) => {
    if (o.code === 0 || o.code === 14) return;
    if (this.held.get(t.taskId) === t) this.drop(t.taskId, CANCEL_REASONS.dispatchRefused);
  };

  // ---- PUBLISH --------------------------------------------------------------------------------

  private publish(t: HeldTask) {
    t.phase = 'reporting';
    const plan = planPublish(t, t.input ?? EMPTY_INPUT, this.ids.next);
    this.writeReport({ task: t, link: undefined, plan, outcomes: [], left: 0, kind: 'result' });
  }

  // ---- reports from workers -------------------------------------------------------------------

  private find(link: WorkerLink, taskId: string, attempt: number): HeldTask | undefined {
    return link.holding.get(attemptKey(taskId, attempt));
  }

  /**
   * Answers a report that matches no running attempt of this stream: a repeat of a report already
   * answered gets the same answer; anything else is refused (a stale attempt, or a task that
   * was never assigned to this stream).
   */
  private answerUnknown(link: WorkerLink, taskId: string, attempt: number) {
    const past = this.recent.get(attemptKey(taskId, attempt));
    if (past) {
      // A repeat of an accepted report is answered OK; anything else is a stale report.
      if (!past.accepted) this.staleReports++;
      link.ack({ taskId, attempt, accepted: past.accepted, reason: past.reason });
      return;
    }
    this.staleReports++;
    const held = this.held.get(taskId);
    const reason =
      held !== undefined && held.attempt !== attempt ? 'STALE_ATTEMPT' : 'NOT_ASSIGNED';
    link.ack({ taskId, attempt, accepted: false, reason });
  }

  onResults(link: WorkerLink, results: readonly Result[]): void {
    let ahead = 0;
    for (const r of results) {
      const t = this.find(link, r.taskId, r.attempt);
      if (t === undefined) {
        this.answerUnknown(link, r.taskId, r.attempt);
        continue;
      }
      if (t.phase === 'reporting') {
        t.repeats++;
        continue;
      }
      this.leaveRunning(t);
      const output: Payload = { data: r.output, contentType: r.contentType };
      const problem = this.checkOutput(output);
      const plan: StagePlan | FailurePlan = problem
        ? planFailure(t, problem, link.workerId, this.ids.next)
        : planStageDone(
            t,
            TaskState.TASK_STATE_RUNNING,
            output,
            r.nextStages,
            link.workerId,
            this.ids.next,
          );
      const report: ReportWrite = { task: t, link, plan, outcomes: [], left: 0, kind: 'result' };
      this.writeReport(report);
      if (this.holdAhead(report)) ahead++;
    }
    // Dispatched now, the next stages' DISPATCHED and RUNNING ride in the results' message.
    if (ahead > 0) this.dispatchPass();
  }

  /**
   * Holds an advanced task at its next stage before the move is committed, so that its next
   * worker starts while the store syncs. Its writes are queued after the move's, so the store
   * applies them in that order; if the move is refused, the held task is dropped.
   */
  private holdAhead(report: ReportWrite): boolean {
    const plan = report.plan;
    if (this.stopped || plan.kind !== 'advanced' || !('next' in plan)) return false;
    const next = plan.next[0]!;
    if (plan.next.length !== 1 || next.stage.publish || !this.options.serves(next.stage.name)) {
      return false;
    }
    const [init] = queuedByPlan(report.task, 0, plan.next);
    if (!this.enqueue(init!)) return false;
    report.ahead = this.held.get(report.task.taskId);
    return true;
  }

  onFailures(link: WorkerLink, failures: readonly Failure[]): void {
    for (const f of failures) {
      const t = this.find(link, f.taskId, f.attempt);
      if (t === undefined) {
        this.answerUnknown(link, f.taskId, f.attempt);
        continue;
      }
      if (t.phase === 'reporting') {
        t.repeats++;
        continue;
      }
      this.leaveRunning(t);
      const error: TaskError = f.error
        ? cutWorkerError(f.error)
        : {
            code: 'HANDLER_ERROR',
            message: 'the worker reported no error',
            retryable: true,
            details: {},
          };
      const plan = planFailure(t, error, link.workerId, this.ids.next);
      this.writeReport({ task: t, link, plan, outcomes: [], left: 0, kind: 'failure' });
    }
  }

  onHeartbeats(link: WorkerLink, heartbeats: readonly Heartbeat[]): void {
    const now = this.now();
    for (const h of heartbeats) {
      const t = this.find(link, h.taskId, h.attempt);
      if (t === undefined || t.phase !== 'running') continue;
      t.lastBeat = now;
      if (h.progress) {
        const bad = progressViolation(h.progress, 'progress');
        if (bad !== undefined) {
          this.failRunning(t, {
            code: CANCEL_REASONS.invalidProgress,
            message: `the worker's ${bad.field} ${bad.description}`,
            retryable: false,
            details: {},
          });
          continue;
        }
        t.progress = h.progress;
        t.progressDirty = true;
      }
    }
  }

  /**
   * Fails a running attempt for a report that cannot be acked (a heartbeat), as a result whose
   * output breaks a limit fails its task: the worker is told to abort, and a later report for the
   * attempt is refused with the same reason.
   */
  private failRunning(t: HeldTask, error: TaskError) {
    const link = t.link!;
    this.leaveRunning(t);
    link.holding.delete(t.attemptKey);
    this.remember(t, false, error.code);
    link.cancel({ taskId: t.taskId, attempt: t.attempt }, error.code);
    const plan = planFailure(t, error, link.workerId, this.ids.next);
    this.writeReport({ task: t, link: undefined, plan, outcomes: [], left: 0, kind: 'failure' });
  }

  private leaveRunning(t: HeldTask) {
    const s = this.stages.get(t.stage.name);
    if (s) this.leftStage(s);
    t.phase = 'reporting';
  }

  private checkOutput(output: Payload): TaskError | undefined {
    if (knownContentType(output.contentType) === undefined) {
      return {
        code: 'UNKNOWN_CONTENT_TYPE',
        message: `the result's content_type ${JSON.stringify(output.contentType.slice(0, 100))} is not a known type`,
        retryable: false,
        details: {},
      };
    }
    if (output.data.length > this.maxPayload) {
      return {
        code: 'PAYLOAD_TOO_LARGE',
        message: `the result's output is ${output.data.length} bytes, more than the ${this.maxPayload} allowed`,
        retryable: false,
        details: {},
      };
    }
    return undefined;
  }

  private writeReport(report: ReportWrite) {
    report.left = report.plan.writes.length;
    report.outcomes = [];
    for (const w of report.plan.writes) this.writer.write(w, this.onReportOutcome, report);
  }

  private readonly onReportOutcome = (o: TransitionOutcome, report: ReportWrite) => {
    report.outcomes.push(o);
    if (--report.left > 0) return;
    this.finishReport(report);
  };

  private finishReport(report: ReportWrite) {
    const t = report.task;
    const first = report.outcomes[0]!;
    const plan = report.plan;
    // A write refused as malformed would leave the task RUNNING with no router holding it: fail
    // the task instead, saying why (a failing write refused in turn is left to the timeouts).
    if (first.code === 3 && plan.kind !== 'failed') {
      this.dropAhead(report);
      const refused = plan.writes[0]!;
      const w = transitionWrite(
        this.ids.next(),
        t.taskId,
        refused.expectedState,
        t.attempt,
        TaskState.TASK_STATE_FAILED,
        t.attempt,
        '',
        refused.workerId,
        'RESULT_REFUSED',
      );
      w.error = {
        code: 'RESULT_REFUSED',
        message: `the status service refused the result: ${first.message}`,
        retryable: false,
        details: {},
      };
      report.plan = { kind: 'failed', writes: [w] };
      this.writeReport(report);
      return;
    }
    const accepted = first.code === 0;
    const reason = accepted ? '' : first.reason || 'REFUSED';
    if (this.held.get(t.taskId) === t) this.held.delete(t.taskId);
    if (report.link !== undefined) {
      t.link?.holding.delete(t.attemptKey);
      const entry = { taskId: t.taskId, attempt: t.attempt, accepted, reason };
      for (let i = 0; i <= t.repeats; i++) report.link.ack(entry);
      this.remember(t, accepted, reason);
    }
    if (!accepted) {
      this.dropAhead(report);
      if (first.code !== 9 && first.code !== 14) {
        this.logger.warn(
          { taskId: t.taskId, code: first.code, reason: first.reason },
          `report refused by the store: ${first.message}`,
        );
      }
      return;
    }
    const ok =
      plan.kind !== 'failed' && plan.kind !== 'dead-lettered' && plan.kind !== 'retry-wait';
    this.attemptEnded(t, ok);
    const ahead = report.ahead;
    if (ahead !== undefined) {
      this.ahead.committed++;
      // Its report answered, a task parked for the reporting stream may go there now.
      if (ahead.parked && this.held.get(ahead.taskId) === ahead) {
        ahead.parked = false;
        this.queue(ahead);
        this.scheduleDispatch();
      }
      return;
    }
    if ((plan.kind === 'advanced' || plan.kind === 'fanned-out') && 'next' in plan) {
      this.follow(queuedByPlan(t, first.seq, plan.next));
    }
  }

  private dropAhead(report: ReportWrite) {
    const ahead = report.ahead;
    if (ahead === undefined) return;
    report.ahead = undefined;
    this.ahead.calledOff++;
    if (this.held.get(ahead.taskId) === ahead) {
      this.drop(ahead.taskId, CANCEL_REASONS.dispatchRefused);
    }
  }

  /** Tasks a commit queued: held here when this router serves their stage, else forwarded. */
  private follow(inits: readonly HeldTaskInit[]) {
    const away: HeldTaskInit[] = [];
    for (const init of inits) {
      if (this.options.serves(init.stage.name)) this.enqueue(init);
      else away.push(init);
    }
    if (away.length > 0) this.options.forward?.(away);
  }

  private remember(t: HeldTask, accepted: boolean, reason: string) {
    const k = t.attemptKey;
    this.recent.delete(k);
    this.recent.set(k, { accepted, reason });
    if (this.recent.size > RECENT_REPORTS) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
  }

  // ---- the lease and progress checkpoints ------------------------------------------------------

  /** Enforces heartbeat timeouts and stores progress now and then. Runs on a timer. */
  sweep(): void {
    if (this.stopped) return;
    const now = this.now();
    for (const link of this.links) {
      for (const t of link.holding.values()) {
        if (t.phase !== 'running') continue;
        const hb = t.stage.heartbeatTimeoutMs;
        if (hb > 0 && now - t.lastBeat > hb) this.leaseLost(t);
        else if (t.progressDirty && now - t.progressStoredAt >= this.checkpointMs) {
          this.checkpoint(t, now);
        }
      }
    }
  }

  private leaseLost(t: HeldTask) {
    const link = t.link!;
    this.leaseLosses++;
    const plan = planLeaseLost(t, link.workerId, this.ids.next);
    for (const w of plan.writes) this.writer.write(w);
    this.held.delete(t.taskId);
    this.release(t);
    this.remember(t, false, CANCEL_REASONS.leaseLost);
    this.attemptEnded(t, false);
    link.cancel({ taskId: t.taskId, attempt: t.attempt }, CANCEL_REASONS.leaseLost);
    this.logger.info(
      { taskId: t.taskId, attempt: t.attempt, workerId: link.workerId, stage: t.stage.name },
      'heartbeat timeout: lease lost',
    );
  }

  private checkpoint(t: HeldTask, now: number) {
    t.progressDirty = false;
    t.progressStoredAt = now;
    const w = transitionWrite(
      this.ids.next(),
      t.taskId,
      TaskState.TASK_STATE_RUNNING,
      t.attempt,
      TaskState.TASK_STATE_RUNNING,
      t.attempt,
      '',
      t.link?.workerId ?? '',
      'PROGRESS',
    );
    w.progress = t.progress;
    this.writer.write(w);
  }

  // ---- load -------------------------------------------------------------------------------

  load(): StageLoad[] {
    const out: StageLoad[] = [];
    for (const s of this.stages.values()) {
      let credit = 0;
      for (const l of s.links) if (!l.draining) credit += l.credit;
      out.push(s.stats.load(s.name, s.queue.size, s.links.length, credit));
    }
    return out.sort((a, b) => a.stage.localeCompare(b.stage));
  }

  /** Counts for tests and logs. */
  counts(): { held: number; queued: number; links: number } {
    let queued = 0;
    for (const s of this.stages.values()) queued += s.queue.size;
    return { held: this.held.size, queued, links: this.links.size };
  }
}

export type { CompiledStage };

/**
 * Records `dsat.dispatch <stage>` as a child of the task's stored context and returns the context
 * the worker's `dsat.process` span hangs under; with tracing off, the task's own traceparent.
 */
function dispatchTraceparent(t: HeldTask, workerId: string): string {
  const span = startTaskSpan(
    SPAN_NAMES.dispatch(t.stage.name),
    SpanKind.INTERNAL,
    t.traceparent,
    {
      taskId: t.taskId,
      pipeline: t.pipeline.name,
      stage: t.stage.name,
      attempt: t.attempt,
      workerId,
      parentTaskId: t.parentTaskId,
    },
    'send',
  );
  const traceparent = spanTraceparent(span);
  span.end();
  return traceparent ?? t.traceparent;
}
