import fs from 'node:fs';
import type { Transition } from '../../gen/dsat/task/v1/task';
import { TaskState } from '../../gen/dsat/task/v1/task';
import { isTerminalState, transitionRule } from '../../services/status/task-state-machine';

/**
 * The history of a fault test as JSONL, one record a line, and the checker that judges it
 * (TESTS.md): lost (acked, never terminal), unexpected (a result or execution nobody submitted),
 * duplicated (an execution no recorded attempt explains), illegal transitions, and late tasks.
 *
 * Writers: the test appends `submit` (each client ack), `terminal` (each terminal transition from
 * the feed) and, at the end, `history` (GetTaskHistory of each task); handlers append `exec`
 * (each execution, before its work, so that a killed attempt counts too).
 */
export type HistoryRecord =
  | {
      readonly kind: 'submit';
      readonly ref: string;
      readonly taskId: string;
      readonly at: number;
      /** What the client sent, for `resultMatches`. */
      readonly input?: unknown;
    }
  | {
      readonly kind: 'exec';
      readonly taskId: string;
      readonly stage?: string;
      readonly attempt: number;
      readonly worker: string;
      readonly at: number;
    }
  | {
      readonly kind: 'terminal';
      readonly taskId: string;
      readonly state: string;
      readonly stage: string;
      readonly attempt: number;
      readonly at: number;
      /** The final payload as text, when there is one. */
      readonly output?: string;
    }
  | {
      readonly kind: 'history';
      readonly taskId: string;
      readonly transitions: readonly HistoryTransition[];
    };

export interface HistoryTransition {
  readonly from: string;
  readonly to: string;
  readonly stage: string;
  readonly attempt: number;
  readonly reason: string;
  readonly worker: string;
}

export interface CheckOptions {
  /** Wall-clock ms by which every acked task must be terminal (e.g. heal + 2 × largest timeout). */
  readonly terminalBy?: number;
  /** Whether a task's final output belongs to what was submitted under it. */
  readonly resultMatches?: (input: unknown, output: string) => boolean;
}

export interface HistoryReport {
  readonly acked: number;
  readonly terminal: number;
  readonly executions: number;
  /** Executions beyond each task's first, and the requeues that explain them. */
  readonly extraExecutions: number;
  readonly extraAttempts: number;
  readonly extraAttemptsByReason: Record<string, number>;
  readonly byState: Record<string, number>;
  readonly lost: string[];
  readonly unexpected: string[];
  readonly duplicated: string[];
  readonly illegal: string[];
  readonly late: string[];
}

/** Appends records to a JSONL file, one write a record, so concurrent writers never interleave. */
export class HistoryLog {
  constructor(readonly file: string) {}

  append(record: HistoryRecord): void {
    fs.appendFileSync(this.file, JSON.stringify(record) + '\n');
  }

  /** The record of a terminal transition as the feed delivers it. */
  terminal(t: Transition, at = Date.now()): void {
    this.append({
      kind: 'terminal',
      taskId: t.taskId,
      state: TaskState[t.toState],
      stage: t.stage,
      attempt: t.attempt,
      at,
      output: t.payload ? Buffer.from(t.payload.data).toString('utf8') : undefined,
    });
  }

  history(taskId: string, transitions: readonly Transition[]): void {
    this.append({
      kind: 'history',
      taskId,
      transitions: transitions.map((t) => ({
        from: TaskState[t.fromState],
        to: TaskState[t.toState],
        stage: t.stage,
        attempt: t.attempt,
        reason: t.reason,
        worker: t.workerId,
      })),
    });
  }
}

export function readHistory(file: string): HistoryRecord[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as HistoryRecord);
}

const stateOf = (name: string): TaskState | undefined =>
  (TaskState as unknown as Record<string, TaskState>)[name];

function push<K, V>(m: Map<K, V[]>, k: K, v: V) {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/** Checks a history; every list in the report names the offending tasks with the reason. */
export function checkHistory(
  records: readonly HistoryRecord[],
  options: CheckOptions = {},
): HistoryReport {
  const submits = new Map<string, Extract<HistoryRecord, { kind: 'submit' }>>();
  const execs = new Map<string, Extract<HistoryRecord, { kind: 'exec' }>[]>();
  const terminals = new Map<string, Extract<HistoryRecord, { kind: 'terminal' }>[]>();
  const histories = new Map<string, readonly HistoryTransition[]>();
  for (const r of records) {
    if (r.kind === 'submit') {
      // A client retry with the same idempotency key gets the same task: one task, acked twice.
      if (!submits.has(r.taskId)) submits.set(r.taskId, r);
    } else if (r.kind === 'exec') push(execs, r.taskId, r);
    else if (r.kind === 'terminal') push(terminals, r.taskId, r);
    else histories.set(r.taskId, r.transitions);
  }

  const lost: string[] = [];
  const unexpected: string[] = [];
  const duplicated: string[] = [];
  const illegal: string[] = [];
  const late: string[] = [];
  const byState: Record<string, number> = {};
  const extraAttemptsByReason: Record<string, number> = {};
  let executions = 0;
  let extraExecutions = 0;
  let extraAttempts = 0;

  for (const id of new Set([...execs.keys(), ...terminals.keys()])) {
    if (!submits.has(id)) unexpected.push(`${id}: executed or ended, never acked to a client`);
  }

  for (const [id, submit] of submits) {
    const ends = terminals.get(id) ?? [];
    const end = ends[0];
    if (!end) lost.push(`${id} (${submit.ref}): acked, never terminal`);
    else {
      byState[end.state] = (byState[end.state] ?? 0) + 1;
      if (ends.length > 1) illegal.push(`${id}: ${ends.length} terminal transitions`);
      if (options.terminalBy !== undefined && end.at > options.terminalBy) {
        late.push(`${id}: terminal ${end.at - options.terminalBy} ms after the deadline`);
      }
      if (
        end.state === 'TASK_STATE_SUCCEEDED' &&
        options.resultMatches &&
        !options.resultMatches(submit.input, end.output ?? '')
      ) {
        unexpected.push(`${id}: result ${end.output} is not the result of ${submit.ref}`);
      }
    }

    const hist = histories.get(id);
    // Each attempt a task was queued for, by stage: the reason it was (re)queued.
    const queued = new Map<string, string>();
    if (hist) {
      let prev: HistoryTransition | undefined;
      for (const t of hist) {
        const from = stateOf(t.from);
        const to = stateOf(t.to);
        if (from === undefined || to === undefined || !transitionRule(from, to)) {
          illegal.push(`${id}: ${t.from} → ${t.to} is not a legal edge`);
        }
        if (prev && t.from !== prev.to) {
          illegal.push(`${id}: ${t.from} → ${t.to} follows ${prev.to}`);
        }
        if (prev && isTerminalState(stateOf(prev.to) ?? TaskState.TASK_STATE_UNSPECIFIED)) {
          illegal.push(`${id}: ${t.to} after the terminal ${prev.to}`);
        }
        if (t.to === 'TASK_STATE_QUEUED') {
          const key = `${t.stage}#${t.attempt}`;
          if (queued.has(key)) illegal.push(`${id}: queued twice at ${key}`);
          queued.set(key, t.reason);
          if (t.attempt > 1) {
            extraAttempts++;
            extraAttemptsByReason[t.reason] = (extraAttemptsByReason[t.reason] ?? 0) + 1;
            if (t.reason === '') illegal.push(`${id}: attempt ${t.attempt} without a reason`);
          }
        }
        prev = t;
      }
      if (end && prev && prev.to !== end.state) {
        illegal.push(`${id}: the history ends ${prev.to}, the feed said ${end.state}`);
      }
    }

    // An execution is explained by the attempt it ran: queued once, run at most once.
    const runs = execs.get(id) ?? [];
    executions += runs.length;
    extraExecutions += Math.max(0, runs.length - 1);
    const seen = new Set<string>();
    for (const e of runs) {
      const key = `${e.stage ?? end?.stage ?? ''}#${e.attempt}`;
      if (seen.has(key)) duplicated.push(`${id}: attempt ${key} ran twice (on ${e.worker})`);
      seen.add(key);
      if (hist && e.stage !== undefined && !queued.has(key)) {
        duplicated.push(`${id}: ran attempt ${key} on ${e.worker}, which was never queued`);
      }
    }
  }

  return {
    acked: submits.size,
    terminal: [...submits.keys()].filter((id) => terminals.has(id)).length,
    executions,
    extraExecutions,
    extraAttempts,
    extraAttemptsByReason,
    byState,
    lost,
    unexpected,
    duplicated,
    illegal,
    late,
  };
}
