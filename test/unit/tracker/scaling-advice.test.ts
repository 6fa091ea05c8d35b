import { ScalingAction } from '../../../gen/dsat/tracker/v1/tracker';
import type { PoolFigures } from '../../../services/tracker/scaling-advice';
import {
  DEFAULT_SCALING_MARKS,
  createScalingAdvisor,
} from '../../../services/tracker/scaling-advice';

const {
  SCALING_ACTION_HOLD: HOLD,
  SCALING_ACTION_GROW: GROW,
  SCALING_ACTION_SHRINK: SHRINK,
} = ScalingAction;

/** Four workers of 5 credits each; `free` of the 20 credits idle. */
const pool = (free: number, queueDepth: number): PoolFigures => ({
  workers: 4,
  freeCredit: free,
  inFlight: 20 - free,
  queueDepth,
});

describe('scaling advice', () => {
  it('documents its marks', () => {
    expect(DEFAULT_SCALING_MARKS).toEqual({
      growBelow: 0.1,
      growAfter: 3,
      growUntil: 0.25,
      shrinkAbove: 0.6,
      shrinkAfter: 10,
      shrinkUntil: 0.45,
      targetFree: 0.3,
    });
  });

  it('grows after 3 consecutive reports below 10% free with a queue, not before', () => {
    const a = createScalingAdvisor();
    expect(a.observe('s', pool(1, 10)).action).toBe(HOLD);
    expect(a.observe('s', pool(1, 10)).action).toBe(HOLD);
    const grow = a.observe('s', pool(1, 10));
    // 29 tasks wanted at 5 per worker, 70% busy: ceil(29 / 3.5) = 9.
    expect(grow).toEqual({
      action: GROW,
      desiredWorkers: 9,
      reason: 'free credit is 5% of capacity (below 10%) with 10 tasks queued',
    });
  });

  it('does not grow on a streak that was broken', () => {
    const a = createScalingAdvisor();
    a.observe('s', pool(1, 10));
    a.observe('s', pool(1, 10));
    a.observe('s', pool(4, 10)); // 20% free
    a.observe('s', pool(1, 10));
    expect(a.observe('s', pool(1, 10)).action).toBe(HOLD);
    expect(a.observe('s', pool(0, 10)).action).toBe(GROW);
  });

  it('does not grow a saturated pool with nothing queued', () => {
    const a = createScalingAdvisor();
    for (let i = 0; i < 5; i++) expect(a.observe('s', pool(0, 0)).action).toBe(HOLD);
  });

  it('holds GROW between the marks (hysteresis), and leaves it above 25% free or with an empty queue', () => {
    const a = createScalingAdvisor();
    for (let i = 0; i < 3; i++) a.observe('s', pool(1, 10));
    expect(a.observe('s', pool(3, 10)).action).toBe(GROW); // 15%: still GROW
    expect(a.observe('s', pool(4, 10)).action).toBe(GROW); // 20%
    expect(a.observe('s', pool(5, 10)).action).toBe(HOLD); // 25%
    for (let i = 0; i < 3; i++) a.observe('s', pool(1, 10));
    expect(a.advice('s', pool(1, 10)).action).toBe(GROW);
    expect(a.observe('s', pool(1, 0)).action).toBe(HOLD);
  });

  it('shrinks after 10 reports above 60% free with an empty queue, holds between the marks, leaves at 45%', () => {
    const a = createScalingAdvisor();
    for (let i = 0; i < 9; i++) expect(a.observe('s', pool(18, 0)).action).toBe(HOLD);
    const shrink = a.observe('s', pool(18, 0));
    // 2 in flight need one worker at 70% busy.
    expect(shrink).toEqual({
      action: SHRINK,
      desiredWorkers: 1,
      reason: 'free credit is 90% of capacity (above 60%) and nothing is queued',
    });
    expect(a.observe('s', pool(10, 0)).action).toBe(SHRINK); // 50%
    expect(a.observe('s', pool(9, 0)).action).toBe(HOLD); // 45%
  });

  it('leaves SHRINK as soon as anything is queued', () => {
    const a = createScalingAdvisor();
    for (let i = 0; i < 10; i++) a.observe('s', pool(18, 0));
    expect(a.observe('s', pool(18, 1)).action).toBe(HOLD);
  });

  it('never advises shrinking a single worker', () => {
    const a = createScalingAdvisor();
    const one = { workers: 1, freeCredit: 5, inFlight: 0, queueDepth: 0 };
    for (let i = 0; i < 20; i++) expect(a.observe('s', one).action).toBe(HOLD);
  });

  it('asks for a first worker when tasks queue at a stage without workers', () => {
    const a = createScalingAdvisor();
    const none = { workers: 0, freeCredit: 0, inFlight: 0, queueDepth: 7 };
    a.observe('s', none);
    a.observe('s', none);
    expect(a.observe('s', none)).toEqual({
      action: GROW,
      desiredWorkers: 1,
      reason: '7 tasks queued and no worker capacity',
    });
  });

  it('keeps each stage apart', () => {
    const a = createScalingAdvisor();
    for (let i = 0; i < 3; i++) a.observe('busy', pool(0, 10));
    expect(a.advice('busy', pool(0, 10)).action).toBe(GROW);
    expect(a.advice('idle', pool(10, 0)).action).toBe(HOLD);
  });
});
