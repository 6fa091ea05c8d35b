import { describe, expect, it } from '@jest/globals';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { DsatError } from '../../../services/shared/errors';
import {
  ALL_TASK_STATES,
  TERMINAL_STATES,
  TRANSITION_RULES,
  checkTransition,
  isTerminalState,
  stateName,
  transitionRule,
} from '../../../services/status/task-state-machine';

const S = TaskState;

/** The edges the brief and DESIGN.md name, written out independently of the table. */
const EXPECTED = new Set([
  'UNSPECIFIED>SUBMITTED',
  'SUBMITTED>QUEUED',
  'QUEUED>DISPATCHED',
  'QUEUED>QUEUED',
  'QUEUED>SUCCEEDED',
  'QUEUED>FAILED',
  'QUEUED>TIMED_OUT',
  'QUEUED>CANCELLED',
  'DISPATCHED>RUNNING',
  'DISPATCHED>QUEUED',
  'DISPATCHED>TIMED_OUT',
  'DISPATCHED>CANCELLED',
  'RUNNING>RUNNING',
  'RUNNING>QUEUED',
  'RUNNING>SUCCEEDED',
  'RUNNING>RETRY_WAIT',
  'RUNNING>FAILED',
  'RUNNING>DEAD_LETTERED',
  'RUNNING>WAITING',
  'RUNNING>TIMED_OUT',
  'RUNNING>CANCELLED',
  'RETRY_WAIT>QUEUED',
  'RETRY_WAIT>CANCELLED',
  'WAITING>QUEUED',
  'WAITING>SUCCEEDED',
  'WAITING>FAILED',
  'WAITING>TIMED_OUT',
  'WAITING>CANCELLED',
  'TIMED_OUT>RETRY_WAIT',
  'TIMED_OUT>QUEUED',
  'TIMED_OUT>DEAD_LETTERED',
  'TIMED_OUT>FAILED',
  'TIMED_OUT>CANCELLED',
  'DEAD_LETTERED>QUEUED',
]);

const pairs = ALL_TASK_STATES.flatMap((from) => ALL_TASK_STATES.map((to) => [from, to] as const));

describe('task state machine', () => {
  it.each(pairs.map(([from, to]) => [stateName(from), stateName(to), from, to] as const))(
    '%s → %s is legal exactly when listed',
    (fromName, toName, from, to) => {
      const legal = EXPECTED.has(`${fromName}>${toName}`);
      expect(transitionRule(from, to) !== undefined).toBe(legal);
      if (legal) {
        const rule = checkTransition(from, to);
        expect(rule.from).toBe(from);
        expect(rule.to).toBe(to);
        expect(rule.why.length).toBeGreaterThan(10);
      } else {
        let thrown: unknown;
        try {
          checkTransition(from, to);
        } catch (err) {
          thrown = err;
        }
        expect(thrown).toBeInstanceOf(DsatError);
        expect(thrown).toMatchObject({ kind: 'FAILED_PRECONDITION', reason: 'ILLEGAL_TRANSITION' });
        expect((thrown as Error).message).toContain(`${fromName} → ${toName}`);
      }
    },
  );

  it('has one table row per legal edge', () => {
    expect(TRANSITION_RULES).toHaveLength(EXPECTED.size);
  });

  it('lets nothing leave a terminal state but a redrive of a dead letter', () => {
    for (const from of TERMINAL_STATES) {
      const out = ALL_TASK_STATES.filter((to) => transitionRule(from, to) !== undefined);
      expect(out).toEqual(from === S.TASK_STATE_DEAD_LETTERED ? [S.TASK_STATE_QUEUED] : []);
      expect(isTerminalState(from)).toBe(true);
    }
  });

  it('lets every resting non-terminal state be cancelled', () => {
    const resting = ALL_TASK_STATES.filter(
      (s) => !isTerminalState(s) && s !== S.TASK_STATE_UNSPECIFIED && s !== S.TASK_STATE_SUBMITTED,
    );
    expect(resting).toHaveLength(6);
    for (const from of resting) expect(transitionRule(from, S.TASK_STATE_CANCELLED)).toBeDefined();
  });

  it('gives RUNNING → QUEUED both the next-stage and the requeue move', () => {
    expect(transitionRule(S.TASK_STATE_RUNNING, S.TASK_STATE_QUEUED)?.moves).toEqual([
      'advance',
      'retry',
    ]);
    expect(transitionRule(S.TASK_STATE_DISPATCHED, S.TASK_STATE_QUEUED)?.moves).toEqual(['retry']);
    expect(transitionRule(S.TASK_STATE_DEAD_LETTERED, S.TASK_STATE_QUEUED)?.moves).toEqual([
      'redrive',
    ]);
  });

  it('refuses values outside the enum', () => {
    expect(() => checkTransition(99 as TaskState, S.TASK_STATE_QUEUED)).toThrow(/99 → QUEUED/);
    expect(transitionRule(S.TASK_STATE_QUEUED, -1 as TaskState)).toBeUndefined();
  });
});
