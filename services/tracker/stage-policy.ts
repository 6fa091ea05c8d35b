import type { Pipeline, Stage } from '../../gen/dsat/pipeline/v1/pipeline';
import { Decorator } from '../../gen/dsat/pipeline/v1/pipeline';
import { durationMs } from '../shared/proto-duration';

/** The wait between attempts, in milliseconds, with the defaults of pipeline.proto applied. */
export interface BackoffPolicy {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  readonly jitter: number;
}

/** What the tracker needs of one stage: its deadlines, attempt budget and backoff. */
export interface StagePolicy {
  readonly stage: string;
  /** Schedule-to-start: QUEUED until dispatched. 0 = no limit. */
  readonly queueTimeoutMs: number;
  /** Start-to-close of one attempt, counted from DISPATCHED. 0 = no limit. */
  readonly runTimeoutMs: number;
  /** How long an ASYNC stage waits in WAITING. 0 = no limit. */
  readonly asyncTimeoutMs: number;
  readonly maxAttempts: number;
  readonly backoff: BackoffPolicy;
  /** Error codes (a timeout's code among them, e.g. RUN_TIMEOUT) that fail the task at once. */
  readonly nonRetryable: ReadonlySet<string>;
}

export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_BACKOFF: BackoffPolicy = Object.freeze({
  initialMs: 1_000,
  maxMs: 60_000,
  multiplier: 2,
  jitter: 0.2,
});

/** Proto3 cannot tell 0 from unset: a zero field takes its default. */
export function backoffPolicy(stage: Stage): BackoffPolicy {
  const b = stage.backoff;
  if (b === undefined) return DEFAULT_BACKOFF;
  const initialMs = durationMs(b.initial) || DEFAULT_BACKOFF.initialMs;
  return {
    initialMs,
    maxMs: durationMs(b.max) || Math.max(DEFAULT_BACKOFF.maxMs, initialMs),
    multiplier: b.multiplier || DEFAULT_BACKOFF.multiplier,
    jitter: b.jitter || DEFAULT_BACKOFF.jitter,
  };
}

export function stagePolicy(stage: Stage): StagePolicy {
  const async = stage.decorators.includes(Decorator.DECORATOR_ASYNC);
  return {
    stage: stage.name,
    queueTimeoutMs: durationMs(stage.queueTimeout),
    runTimeoutMs: durationMs(stage.runTimeout),
    asyncTimeoutMs: async ? durationMs(stage.asyncTimeout) : 0,
    maxAttempts: stage.maxAttempts || DEFAULT_MAX_ATTEMPTS,
    backoff: backoffPolicy(stage),
    nonRetryable: new Set(stage.nonRetryableErrors),
  };
}

/** The policy of a stage the tracker cannot find: no deadlines, default attempts and backoff. */
export function defaultStagePolicy(stage: string): StagePolicy {
  return {
    stage,
    queueTimeoutMs: 0,
    runTimeoutMs: 0,
    asyncTimeoutMs: 0,
    maxAttempts: DEFAULT_MAX_ATTEMPTS,
    backoff: DEFAULT_BACKOFF,
    nonRetryable: new Set(),
  };
}

/** Every stage's policy, by stage name. */
export function pipelinePolicies(p: Pipeline): ReadonlyMap<string, StagePolicy> {
  return new Map(p.stages.map((s) => [s.name, stagePolicy(s)]));
}
