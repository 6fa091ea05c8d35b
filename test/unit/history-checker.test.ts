import type { HistoryRecord, HistoryTransition } from '../helpers/history-checker';
import { checkHistory } from '../helpers/history-checker';

/** The checker of fault-test histories must catch what it exists to catch. */

const tr = (
  from: string,
  to: string,
  attempt: number,
  reason = '',
  stage = 'work',
): HistoryTransition => ({
  from: `TASK_STATE_${from}`,
  to: `TASK_STATE_${to}`,
  stage,
  attempt,
  reason,
  worker: '',
});

const submit = (taskId: string, i: number, at = 0): HistoryRecord => ({
  kind: 'submit',
  ref: `r${i}`,
  taskId,
  at,
  input: { i },
});
const exec = (taskId: string, attempt: number, worker = 'w'): HistoryRecord => ({
  kind: 'exec',
  taskId,
  stage: 'work',
  attempt,
  worker,
  at: 0,
});
const end = (taskId: string, i: number, attempt = 1, at = 10): HistoryRecord => ({
  kind: 'terminal',
  taskId,
  state: 'TASK_STATE_SUCCEEDED',
  stage: 'work',
  attempt,
  at,
  output: JSON.stringify({ i }),
});
const happy = [
  tr('UNSPECIFIED', 'SUBMITTED', 1, 'SUBMITTED'),
  tr('SUBMITTED', 'QUEUED', 1, 'SUBMITTED'),
  tr('QUEUED', 'DISPATCHED', 1),
  tr('DISPATCHED', 'RUNNING', 1),
];
const retried = [
  ...happy,
  tr('RUNNING', 'QUEUED', 2, 'WORKER_LOST'),
  tr('QUEUED', 'DISPATCHED', 2),
  tr('DISPATCHED', 'RUNNING', 2),
  tr('RUNNING', 'SUCCEEDED', 2),
];
const matches = (input: unknown, output: string) =>
  (JSON.parse(output) as { i: number }).i === (input as { i: number }).i;

describe('checkHistory', () => {
  it('passes a clean history with a retry explained by WORKER_LOST', () => {
    const r = checkHistory(
      [
        submit('a', 1),
        exec('a', 1, 'w1'),
        exec('a', 2, 'w2'),
        end('a', 1, 2),
        { kind: 'history', taskId: 'a', transitions: retried },
      ],
      { terminalBy: 100, resultMatches: matches },
    );
    expect(r).toMatchObject({
      acked: 1,
      terminal: 1,
      executions: 2,
      extraExecutions: 1,
      extraAttempts: 1,
      extraAttemptsByReason: { WORKER_LOST: 1 },
      lost: [],
      unexpected: [],
      duplicated: [],
      illegal: [],
      late: [],
    });
  });

  it('finds a lost task, an unexpected one, a wrong result and a late one', () => {
    const r = checkHistory(
      [
        submit('a', 1),
        submit('b', 2),
        submit('c', 3),
        end('b', 99),
        end('c', 3, 1, 500),
        exec('x', 1),
        end('x', 7),
      ],
      { terminalBy: 100, resultMatches: matches },
    );
    expect(r.lost).toEqual([expect.stringContaining('a (r1)')]);
    expect(r.unexpected).toEqual([
      expect.stringMatching(/^x: executed or ended, never acked/),
      expect.stringMatching(/^b: result .* is not the result of r2/),
    ]);
    expect(r.late).toEqual([expect.stringMatching(/^c: terminal 400 ms after/)]);
  });

  it('finds an attempt run twice, and a run no queued attempt explains', () => {
    const r = checkHistory([
      submit('a', 1),
      exec('a', 1, 'w1'),
      exec('a', 1, 'w2'),
      exec('a', 3, 'w2'),
      end('a', 1, 2),
      { kind: 'history', taskId: 'a', transitions: retried },
    ]);
    expect(r.duplicated).toEqual([
      'a: attempt work#1 ran twice (on w2)',
      'a: ran attempt work#3 on w2, which was never queued',
    ]);
  });

  it('finds illegal edges, broken chains, two terminals and a retry without a reason', () => {
    const r = checkHistory([
      submit('a', 1),
      end('a', 1),
      end('a', 1),
      {
        kind: 'history',
        taskId: 'a',
        transitions: [
          ...happy.slice(0, 2),
          tr('QUEUED', 'SUCCEEDED', 1),
          tr('RUNNING', 'QUEUED', 2),
        ],
      },
    ]);
    expect(r.illegal).toEqual([
      'a: 2 terminal transitions',
      'a: TASK_STATE_RUNNING → TASK_STATE_QUEUED follows TASK_STATE_SUCCEEDED',
      'a: TASK_STATE_QUEUED after the terminal TASK_STATE_SUCCEEDED',
      'a: attempt 2 without a reason',
      'a: the history ends TASK_STATE_QUEUED, the feed said TASK_STATE_SUCCEEDED',
    ]);
  });
});
