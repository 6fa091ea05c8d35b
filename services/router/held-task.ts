import type { Assignment, AttemptRef, AckEntry } from '../../gen/dsat/router/v1/router';
import type { Payload, TaskProgress } from '../../gen/dsat/task/v1/task';
import type { CompiledPipeline, CompiledStage } from './pipeline-registry';
import type { Queueable } from './ready-queue';

/**
 * One worker stream as the dispatcher sees it: its credit, what it holds, and where to send
 * assignments, cancels and acks. WorkerSession implements it over gRPC; tests use fakes.
 */
export interface WorkerLink {
  readonly sessionId: string;
  readonly workerId: string;
  readonly stages: readonly string[];
  /** Credit granted and not yet used. Only the dispatcher changes it after Hello. */
  credit: number;
  /** True once the worker said Drain or the stream is closing: it gets no more tasks. */
  draining: boolean;
  /** Attempts assigned on this stream and not yet answered, by `attemptKey`. */
  readonly holding: Map<string, HeldTask>;
  /** Buffers an assignment; `flush()` sends everything buffered as one Assign. */
  assign(assignment: Assignment): void;
  flush(): void;
  cancel(ref: AttemptRef, reason: string): void;
  ack(entry: AckEntry): void;
}

/** Where a held task is: waiting in its queue, on a worker, or being written after a report. */
export type TaskPhase = 'queued' | 'running' | 'reporting';

/** An attempt as reports name it (a fan-out branch is a task of its own, with its own id). */
export function attemptKey(taskId: string, attempt: number): string {
  return `${taskId}:${attempt}`;
}

export interface HeldTaskInit {
  readonly taskId: string;
  readonly pipeline: CompiledPipeline;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly priority: number;
  readonly hops: number;
  readonly traceparent: string;
  readonly input: Payload | undefined;
  readonly progress: TaskProgress | undefined;
  /** The task whose fan-out started this one, '' for a submitted task. */
  readonly parentTaskId: string;
}

/** A task this router holds at one of its stages, for one attempt. */
export class HeldTask implements Queueable {
  readonly attemptKey: string;
  readonly taskId: string;
  readonly pipeline: CompiledPipeline;
  readonly stage: CompiledStage;
  readonly attempt: number;
  readonly priority: number;
  readonly hops: number;
  readonly traceparent: string;
  readonly input: Payload | undefined;
  readonly parentTaskId: string;
  progress: TaskProgress | undefined;
  queued = false;
  phase: TaskPhase = 'queued';
  link: WorkerLink | undefined = undefined;
  /** Monotonic ms of the dispatch or the last heartbeat. */
  lastBeat = 0;
  /** Monotonic ms of the attempt's dispatch. */
  startedAt = 0;
  deadline: Date | undefined = undefined;
  progressDirty = false;
  progressStoredAt = 0;
  /** Repeats of the report being written, each answered with the same ack. */
  repeats = 0;
  /**
   * Out of its queue until the report it follows is answered: the only stream free for it still
   * awaits the Ack of that report, which names the same (task_id, attempt).
   */
  parked = false;

  constructor(init: HeldTaskInit) {
    this.attemptKey = attemptKey(init.taskId, init.attempt);
    this.taskId = init.taskId;
    this.pipeline = init.pipeline;
    this.stage = init.stage;
    this.attempt = init.attempt;
    this.priority = init.priority;
    this.hops = init.hops;
    this.traceparent = init.traceparent;
    this.input = init.input;
    this.progress = init.progress;
    this.parentTaskId = init.parentTaskId;
  }

  /** The same task at its next attempt, queued afresh (no spread: see transition-write.ts). */
  nextAttempt(): HeldTask {
    return new HeldTask({
      taskId: this.taskId,
      pipeline: this.pipeline,
      stage: this.stage,
      attempt: this.attempt + 1,
      priority: this.priority,
      hops: this.hops,
      traceparent: this.traceparent,
      input: this.input,
      progress: this.progress,
      parentTaskId: this.parentTaskId,
    });
  }

  /** `traceparent`: the dispatch span's context when tracing is on. */
  toAssignment(traceparent = this.traceparent): Assignment {
    return {
      taskId: this.taskId,
      stage: this.stage.name,
      attempt: this.attempt,
      pipeline: this.pipeline.name,
      input: this.input,
      deadline: this.deadline,
      traceparent,
      progress: this.progress,
      pipelineVersion: this.pipeline.version,
      priority: this.priority,
      hops: this.hops,
      parentTaskId: this.parentTaskId,
    };
  }
}
