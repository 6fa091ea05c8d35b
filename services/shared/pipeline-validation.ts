import type { Pipeline, Stage } from '../../gen/dsat/pipeline/v1/pipeline';
import { Decorator } from '../../gen/dsat/pipeline/v1/pipeline';
import type { Duration } from '../../gen/google/protobuf/duration';
import type { FieldViolation } from './errors';
import { invalidArguments } from './errors';
import { durationMs, formatMs } from './proto-duration';
import { MAX_FAN_OUT } from './branch-id';

/** Stages a task may run when its pipeline does not say (`max_hops` 0). */
export const DEFAULT_MAX_HOPS = 50;

/** Pipeline and stage names: lower case letters, digits, "-" and "_", at most 63 characters. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const LIMITS = {
  stages: 1_000,
  descriptionLength: 1_024,
  maxAttempts: 100,
  maxHops: 1_000,
  /** The longest timeout or backoff: a year. */
  durationMs: 365 * 86_400_000,
  backoffMultiplier: 100,
  errorCodeLength: 128,
  /** A stage's next stages: the first, and a branch for each other one a result may keep. */
  nextStages: 1 + MAX_FAN_OUT,
} as const;

const DURATION_FIELDS = [
  ['queueTimeout', 'queue_timeout'],
  ['runTimeout', 'run_timeout'],
  ['heartbeatTimeout', 'heartbeat_timeout'],
  ['asyncTimeout', 'async_timeout'],
] as const;

/** A name as messages quote it: a long one is cut, so that one bad name cannot flood the answer. */
function quote(name: string): string {
  return JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
}

function checkName(name: string, what: string): string | undefined {
  if (name === '') return `${what} is required`;
  if (name.length > 63) return `${what} ${quote(name)} is longer than 63 characters`;
  if (!NAME_PATTERN.test(name)) {
    return `${what} ${quote(name)} must be lower case letters, digits, "-" and "_", starting with a letter or digit`;
  }
  return undefined;
}

/** Problems of one duration field: malformed, negative, below 1 ms, or longer than a year. */
function checkDuration(d: Duration | undefined): string | undefined {
  if (d === undefined) return undefined;
  if (
    !Number.isInteger(d.seconds) ||
    !Number.isInteger(d.nanos) ||
    Math.abs(d.nanos) > 999_999_999
  ) {
    return 'is not a valid duration';
  }
  if ((d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0)) {
    return 'is not a valid duration (seconds and nanos differ in sign)';
  }
  const ms = durationMs(d);
  if (ms < 0) return `must not be negative (got ${ms}ms)`;
  if (ms > 0 && ms < 1) return 'must be 0 (no limit) or at least 1ms';
  if (ms > LIMITS.durationMs) return `must be at most 365d (got ${formatMs(ms)})`;
  return undefined;
}

/**
 * Every problem of a pipeline, each naming its element (`pipeline.stages[2].next[0]`, the stage's
 * name in the description): names, duplicate and unknown stages, cycles, unreachable stages,
 * durations, backoff, attempt and hop ranges, decorators. Empty when the pipeline is valid.
 */
export function validatePipeline(p: Pipeline, root = 'pipeline'): FieldViolation[] {
  const out: FieldViolation[] = [];
  const add = (field: string, description: string) => out.push({ field, description });

  const nameProblem = checkName(p.name, 'the pipeline name');
  if (nameProblem !== undefined) add(`${root}.name`, nameProblem);
  if (p.description.length > LIMITS.descriptionLength) {
    add(`${root}.description`, `is longer than ${LIMITS.descriptionLength} characters`);
  }
  if (p.stages.length === 0) add(`${root}.stages`, 'a pipeline needs at least one stage');
  if (p.stages.length > LIMITS.stages) {
    add(`${root}.stages`, `has ${p.stages.length} stages; at most ${LIMITS.stages} are allowed`);
  }

  const index = new Map<string, number>();
  p.stages.forEach((s, i) => {
    const at = `${root}.stages[${i}]`;
    const problem = checkName(s.name, 'the stage name');
    if (problem !== undefined) add(`${at}.name`, problem);
    const first = index.get(s.name);
    if (first !== undefined && s.name !== '') {
      add(`${at}.name`, `stage ${quote(s.name)} is declared twice (first at stages[${first}])`);
    } else if (first === undefined) {
      index.set(s.name, i);
    }
  });

  p.stages.forEach((s, i) => checkStage(s, `${root}.stages[${i}]`, index, add));

  if (p.entryStage !== '' && !index.has(p.entryStage)) {
    add(`${root}.entry_stage`, `names unknown stage ${quote(p.entryStage)}`);
  }
  if (p.maxHops > LIMITS.maxHops) {
    add(
      `${root}.max_hops`,
      `must be from 1 to ${LIMITS.maxHops} (0 means ${DEFAULT_MAX_HOPS}); got ${p.maxHops}`,
    );
  }

  const cycles = findCycles(p, index);
  for (const c of cycles) {
    add(
      `${root}.stages[${c.stageIndex}].next[${c.nextIndex}]`,
      `stage ${quote(c.from)} → ${quote(c.to)} closes a cycle: ${c.path}`,
    );
  }

  const entry = p.entryStage !== '' ? p.entryStage : p.stages[0]?.name;
  if (entry !== undefined && index.has(entry)) {
    const reached = reachable(p, index, entry);
    p.stages.forEach((s, i) => {
      if (index.get(s.name) === i && !reached.has(s.name)) {
        add(
          `${root}.stages[${i}]`,
          `stage ${quote(s.name)} cannot be reached from the entry stage ${quote(entry)}`,
        );
      }
    });
    if (cycles.length === 0) {
      const longest = longestPath(p, index, entry);
      const maxHops = p.maxHops || DEFAULT_MAX_HOPS;
      if (longest > maxHops && p.maxHops <= LIMITS.maxHops) {
        add(
          `${root}.max_hops`,
          `${p.maxHops === 0 ? `the default ${DEFAULT_MAX_HOPS}` : maxHops} is less than the ${longest} stages of the longest path, which would always fail with HOP_LIMIT`,
        );
      }
    }
  }
  return out;
}

function checkStage(
  s: Stage,
  at: string,
  index: ReadonlyMap<string, number>,
  add: (field: string, description: string) => void,
): void {
  const name = quote(s.name);
  const seenNext = new Set<string>();
  if (s.next.length > LIMITS.nextStages) {
    add(
      `${at}.next`,
      `stage ${name} has ${s.next.length} next stages; at most ${LIMITS.nextStages} are allowed`,
    );
  }
  s.next.forEach((n, j) => {
    if (!index.has(n))
      add(`${at}.next[${j}]`, `stage ${name} names unknown next stage ${quote(n)}`);
    else if (seenNext.has(n))
      add(`${at}.next[${j}]`, `stage ${name} names next stage ${quote(n)} twice`);
    seenNext.add(n);
  });

  for (const [key, field] of DURATION_FIELDS) {
    const problem = checkDuration(s[key]);
    if (problem !== undefined) add(`${at}.${field}`, `stage ${name}: ${field} ${problem}`);
  }
  const run = durationMs(s.runTimeout);
  const heartbeat = durationMs(s.heartbeatTimeout);
  if (run > 0 && heartbeat > 0 && heartbeat >= run) {
    add(
      `${at}.heartbeat_timeout`,
      `stage ${name}: heartbeat_timeout ${formatMs(heartbeat)} must be shorter than run_timeout ${formatMs(run)}`,
    );
  }

  const seenDecorators = new Set<Decorator>();
  s.decorators.forEach((d, k) => {
    if (d !== Decorator.DECORATOR_PUBLISH && d !== Decorator.DECORATOR_ASYNC) {
      add(
        `${at}.decorators[${k}]`,
        `stage ${name}: ${String(Decorator[d] ?? d)} is not a decorator (PUBLISH or ASYNC)`,
      );
    } else if (seenDecorators.has(d)) {
      add(`${at}.decorators[${k}]`, `stage ${name}: ${Decorator[d]} is listed twice`);
    }
    seenDecorators.add(d);
  });
  const publish = seenDecorators.has(Decorator.DECORATOR_PUBLISH);
  const async = seenDecorators.has(Decorator.DECORATOR_ASYNC);
  if (publish && async) {
    add(
      `${at}.decorators`,
      `stage ${name}: PUBLISH and ASYNC cannot be combined (PUBLISH runs no worker, ASYNC waits for one's reply)`,
    );
  }
  if (durationMs(s.asyncTimeout) > 0 && !async) {
    add(`${at}.async_timeout`, `stage ${name}: async_timeout applies only to an ASYNC stage`);
  }
  if (publish) {
    for (const [key, field] of [DURATION_FIELDS[1], DURATION_FIELDS[2]] as const) {
      if (durationMs(s[key]) > 0)
        add(
          `${at}.${field}`,
          `stage ${name}: a PUBLISH stage runs no worker, so ${field} cannot apply`,
        );
    }
  }

  if (s.maxAttempts > LIMITS.maxAttempts) {
    add(
      `${at}.max_attempts`,
      `stage ${name}: max_attempts must be from 1 to ${LIMITS.maxAttempts} (0 means 3); got ${s.maxAttempts}`,
    );
  }

  const b = s.backoff;
  if (b !== undefined) {
    for (const key of ['initial', 'max'] as const) {
      const problem = checkDuration(b[key]);
      if (problem !== undefined)
        add(`${at}.backoff.${key}`, `stage ${name}: backoff.${key} ${problem}`);
    }
    const initial = durationMs(b.initial);
    const max = durationMs(b.max);
    if (initial > 0 && max > 0 && max < initial) {
      add(
        `${at}.backoff.max`,
        `stage ${name}: backoff.max ${formatMs(max)} is shorter than backoff.initial ${formatMs(initial)}`,
      );
    }
    if (
      !Number.isFinite(b.multiplier) ||
      (b.multiplier !== 0 && (b.multiplier < 1 || b.multiplier > LIMITS.backoffMultiplier))
    ) {
      add(
        `${at}.backoff.multiplier`,
        `stage ${name}: backoff.multiplier must be from 1 to ${LIMITS.backoffMultiplier} (0 means 2); got ${b.multiplier}`,
      );
    }
    if (!Number.isFinite(b.jitter) || b.jitter < 0 || b.jitter > 1) {
      add(
        `${at}.backoff.jitter`,
        `stage ${name}: backoff.jitter must be from 0 to 1 (0 means 0.2); got ${b.jitter}`,
      );
    }
  }

  const seenCodes = new Set<string>();
  s.nonRetryableErrors.forEach((code, k) => {
    const field = `${at}.non_retryable_errors[${k}]`;
    if (code.trim() === '') add(field, `stage ${name}: an error code cannot be empty`);
    else if (code.length > LIMITS.errorCodeLength)
      add(
        field,
        `stage ${name}: the error code is longer than ${LIMITS.errorCodeLength} characters`,
      );
    else if (seenCodes.has(code)) add(field, `stage ${name}: ${quote(code)} is listed twice`);
    seenCodes.add(code);
  });
}

interface CycleEdge {
  readonly stageIndex: number;
  readonly nextIndex: number;
  readonly from: string;
  readonly to: string;
  /** The cycle as `a → b → a`, its middle left out when long. */
  readonly path: string;
}

/** A cycle's stages for a message: all of a short one, the ends of a long one. */
function cyclePath(open: readonly string[], from: number, to: string): string {
  const names = open.length - from;
  const shown =
    names <= 12
      ? open.slice(from)
      : [...open.slice(from, from + 5), `… ${names - 10} more …`, ...open.slice(-5)];
  return [...shown, to].map((n) => (n.length > 80 ? `${n.slice(0, 80)}…` : n)).join(' → ');
}

/**
 * Every edge that closes a cycle (a back edge of a depth-first walk), with the cycle it closes.
 * The walk keeps its own stack: a chain of thousands of stages would overflow the call stack.
 */
function findCycles(p: Pipeline, index: ReadonlyMap<string, number>): CycleEdge[] {
  const state = new Map<string, 'open' | 'done'>();
  /** The open stages in walk order, and where each is in it. */
  const open: string[] = [];
  const at = new Map<string, number>();
  const frames: { name: string; stageIndex: number; next: number }[] = [];
  const found: CycleEdge[] = [];
  const enter = (name: string) => {
    state.set(name, 'open');
    at.set(name, open.length);
    open.push(name);
    frames.push({ name, stageIndex: index.get(name) as number, next: 0 });
  };
  for (const [root] of index) {
    if (state.has(root)) continue;
    enter(root);
    while (frames.length > 0) {
      const f = frames[frames.length - 1]!;
      const next = (p.stages[f.stageIndex] as Stage).next;
      if (f.next < next.length) {
        const j = f.next++;
        const n = next[j] as string;
        if (!index.has(n)) continue;
        const st = state.get(n);
        if (st === 'open') {
          found.push({
            stageIndex: f.stageIndex,
            nextIndex: j,
            from: f.name,
            to: n,
            path: cyclePath(open, at.get(n) as number, n),
          });
        } else if (st === undefined) {
          enter(n);
        }
        continue;
      }
      frames.pop();
      open.pop();
      at.delete(f.name);
      state.set(f.name, 'done');
    }
  }
  return found;
}

function reachable(p: Pipeline, index: ReadonlyMap<string, number>, entry: string): Set<string> {
  const seen = new Set<string>([entry]);
  const todo = [entry];
  for (let name = todo.pop(); name !== undefined; name = todo.pop()) {
    for (const n of (p.stages[index.get(name) as number] as Stage).next) {
      if (index.has(n) && !seen.has(n)) {
        seen.add(n);
        todo.push(n);
      }
    }
  }
  return seen;
}

/** The most stages a task passes from the entry, in an acyclic pipeline (walked without recursion). */
function longestPath(p: Pipeline, index: ReadonlyMap<string, number>, entry: string): number {
  const depth = new Map<string, number>();
  const nextOf = (name: string) => (p.stages[index.get(name) as number] as Stage).next;
  const frames: { name: string; next: number }[] = [{ name: entry, next: 0 }];
  while (frames.length > 0) {
    const f = frames[frames.length - 1]!;
    const next = nextOf(f.name);
    if (f.next < next.length) {
      const n = next[f.next++] as string;
      if (index.has(n) && !depth.has(n)) frames.push({ name: n, next: 0 });
      continue;
    }
    let best = 0;
    for (const n of next) best = Math.max(best, depth.get(n) ?? 0);
    depth.set(f.name, best + 1);
    frames.pop();
  }
  return depth.get(entry) as number;
}

/** Throws INVALID_ARGUMENT listing every problem, or returns when the pipeline is valid. */
export function assertValidPipeline(p: Pipeline, root = 'pipeline'): void {
  const violations = validatePipeline(p, root);
  if (violations.length > 0) throw invalidArguments(violations, 'INVALID_PIPELINE');
}
