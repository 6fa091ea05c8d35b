import type { ScalingAdvice } from '../../gen/dsat/tracker/v1/tracker';
import { ScalingAction } from '../../gen/dsat/tracker/v1/tracker';

/**
 * The marks of the scaling advice (DSAT's satellites grew a pool when its free capacity fell
 * below a limit). "Free" is free credit / (in flight + free credit): the share of the pool's
 * capacity that is idle. The marks differ for entering and leaving each advice (hysteresis), and
 * an advice is entered only after the condition held for several consecutive load reports, so a
 * burst does not flap the advice.
 */
export interface ScalingMarks {
  /** GROW once free < growBelow with tasks queued, for growAfter consecutive reports. */
  readonly growBelow: number;
  readonly growAfter: number;
  /** Leave GROW (back to HOLD) once free ≥ growUntil or the queue is empty. */
  readonly growUntil: number;
  /** SHRINK once free > shrinkAbove with an empty queue, for shrinkAfter consecutive reports. */
  readonly shrinkAbove: number;
  readonly shrinkAfter: number;
  /** Leave SHRINK once free ≤ shrinkUntil or anything is queued. */
  readonly shrinkUntil: number;
  /** The free share the desired worker count aims for. */
  readonly targetFree: number;
}

export const DEFAULT_SCALING_MARKS: ScalingMarks = Object.freeze({
  growBelow: 0.1,
  growAfter: 3,
  growUntil: 0.25,
  shrinkAbove: 0.6,
  shrinkAfter: 10,
  shrinkUntil: 0.45,
  targetFree: 0.3,
});

/** A stage's pool, summed over the routers that serve it. */
export interface PoolFigures {
  readonly workers: number;
  readonly freeCredit: number;
  readonly inFlight: number;
  readonly queueDepth: number;
}

export interface ScalingAdvisor {
  /** Folds in one load report of the stage; returns the advice after it. */
  observe(stage: string, figures: PoolFigures): ScalingAdvice;
  /** The advice now, for the stage's current figures. */
  advice(stage: string, figures: PoolFigures): ScalingAdvice;
  forget(stage: string): void;
}

interface StageState {
  action:
    | ScalingAction.SCALING_ACTION_HOLD
    | ScalingAction.SCALING_ACTION_GROW
    | ScalingAction.SCALING_ACTION_SHRINK;
  growStreak: number;
  shrinkStreak: number;
}

const pct = (f: number) => `${Math.round(f * 100)}%`;

/** The idle share of the pool; 0 when it has no capacity at all. */
export function freeShare(f: PoolFigures): number {
  const capacity = f.inFlight + f.freeCredit;
  return capacity === 0 ? 0 : f.freeCredit / capacity;
}

export function createScalingAdvisor(marks: ScalingMarks = DEFAULT_SCALING_MARKS): ScalingAdvisor {
  const states = new Map<string, StageState>();

  const stateOf = (stage: string) => {
    let s = states.get(stage);
    if (s === undefined) {
      s = { action: ScalingAction.SCALING_ACTION_HOLD, growStreak: 0, shrinkStreak: 0 };
      states.set(stage, s);
    }
    return s;
  };

  const describe = (s: StageState, f: PoolFigures): ScalingAdvice => {
    const free = freeShare(f);
    const capacity = f.inFlight + f.freeCredit;
    const perWorker = f.workers > 0 ? capacity / f.workers : 0;
    const busyShare = 1 - marks.targetFree;
    if (s.action === ScalingAction.SCALING_ACTION_GROW) {
      const need =
        perWorker > 0 ? Math.ceil((f.inFlight + f.queueDepth) / (perWorker * busyShare)) : 1;
      return {
        action: s.action,
        desiredWorkers: Math.max(f.workers + 1, need),
        reason:
          capacity === 0
            ? `${f.queueDepth} tasks queued and no worker capacity`
            : `free credit is ${pct(free)} of capacity (below ${pct(marks.growBelow)}) with ${f.queueDepth} tasks queued`,
      };
    }
    if (s.action === ScalingAction.SCALING_ACTION_SHRINK) {
      const need = perWorker > 0 ? Math.ceil(f.inFlight / (perWorker * busyShare)) : 1;
      return {
        action: s.action,
        desiredWorkers: Math.max(1, Math.min(f.workers - 1, need)),
        reason: `free credit is ${pct(free)} of capacity (above ${pct(marks.shrinkAbove)}) and nothing is queued`,
      };
    }
    return {
      action: ScalingAction.SCALING_ACTION_HOLD,
      desiredWorkers: f.workers,
      reason: `free credit is ${pct(free)} of capacity with ${f.queueDepth} tasks queued`,
    };
  };

  return {
    observe(stage, f) {
      const s = stateOf(stage);
      const free = freeShare(f);
      const capacity = f.inFlight + f.freeCredit;
      const growing = f.queueDepth > 0 && free < marks.growBelow;
      const shrinking =
        f.queueDepth === 0 && capacity > 0 && f.workers > 1 && free > marks.shrinkAbove;
      s.growStreak = growing ? s.growStreak + 1 : 0;
      s.shrinkStreak = shrinking ? s.shrinkStreak + 1 : 0;
      switch (s.action) {
        case ScalingAction.SCALING_ACTION_GROW:
          if (f.queueDepth === 0 || free >= marks.growUntil)
            s.action = ScalingAction.SCALING_ACTION_HOLD;
          break;
        case ScalingAction.SCALING_ACTION_SHRINK:
          if (f.queueDepth > 0 || free <= marks.shrinkUntil || f.workers <= 1) {
            s.action = ScalingAction.SCALING_ACTION_HOLD;
          }
          break;
        default:
          if (s.growStreak >= marks.growAfter) s.action = ScalingAction.SCALING_ACTION_GROW;
          else if (s.shrinkStreak >= marks.shrinkAfter)
            s.action = ScalingAction.SCALING_ACTION_SHRINK;
      }
      return describe(s, f);
    },
    advice: (stage, f) => describe(stateOf(stage), f),
    forget: (stage) => void states.delete(stage),
  };
}
