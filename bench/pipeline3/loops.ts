import type { BenchTask, StageDoc } from './workload';
import { isCorrectResult } from './workload';

/** The client side of pipeline3, measured as the peers' client-runner does. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export interface Driver {
  /** Connects; `onResult` is called for every final result. */
  start(onResult: (result: StageDoc) => void): Promise<void>;
  /** Hands one task to the system; never blocks (the driver batches). */
  submit(task: BenchTask): void;
  stop(): Promise<void>;
}

export class Phase {
  readonly n: number;
  readonly sched: Float64Array;
  readonly sentAt: Float64Array;
  readonly recvAt: Float64Array;
  readonly count: Uint32Array;
  readonly results: (StageDoc | undefined)[];
  received = 0;
  dups = 0;
  lastProgress = nowMs();
  onFirst: ((idx: number) => void) | undefined;
  done: (() => void) | undefined;

  constructor(
    readonly prefix: string,
    readonly tasks: BenchTask[],
  ) {
    this.n = tasks.length;
    this.sched = new Float64Array(this.n);
    this.sentAt = new Float64Array(this.n);
    this.recvAt = new Float64Array(this.n);
    this.count = new Uint32Array(this.n);
    this.results = new Array<StageDoc | undefined>(this.n);
  }

  /** Records a result; returns false for an id of no task of this phase. */
  receive(r: StageDoc, idx: number): void {
    const c = ++this.count[idx]!;
    if (c > 1) {
      this.dups++;
      return;
    }
    const t = nowMs();
    this.recvAt[idx] = t;
    this.results[idx] = r;
    this.received++;
    this.lastProgress = t;
    this.onFirst?.(idx);
    if (this.received === this.n) this.done?.();
  }

  badResults(): { bad: number; examples: string[] } {
    let bad = 0;
    const examples: string[] = [];
    for (let i = 0; i < this.n; i++) {
      const r = this.results[i];
      if (r && !isCorrectResult(this.tasks[i]!, r)) {
        bad++;
        if (examples.length < 3) examples.push(JSON.stringify(r).slice(0, 200));
      }
    }
    return { bad, examples };
  }
}

export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[
    Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  ]!;
}

export function round(x: number | null | undefined, d = 3): number | null {
  if (x === null || x === undefined || Number.isNaN(x)) return null;
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

export function latencyStats(ph: Phase, from: Float64Array) {
  const lat: number[] = [];
  for (let i = 0; i < ph.n; i++) if (ph.count[i]! > 0) lat.push(ph.recvAt[i]! - from[i]!);
  lat.sort((a, b) => a - b);
  const sum = lat.reduce((a, b) => a + b, 0);
  return {
    p50_ms: round(percentile(lat, 50)),
    p90_ms: round(percentile(lat, 90)),
    p99_ms: round(percentile(lat, 99)),
    max_ms: round(lat.length ? lat[lat.length - 1] : null),
    mean_ms: round(lat.length ? sum / lat.length : null),
  };
}

/** When the phase's last result came back; with none, now (the wait gave up), never 0. */
function lastResultAt(ph: Phase): number {
  let tLast = 0;
  for (let i = 0; i < ph.n; i++)
    if (ph.count[i]! > 0 && ph.recvAt[i]! > tLast) tLast = ph.recvAt[i]!;
  return tLast === 0 ? nowMs() : tLast;
}

export type Ending = 'complete' | 'stalled' | 'deadline';

export function waitAll(ph: Phase, hardDeadline: number, stallMs: number): Promise<Ending> {
  return new Promise((resolve) => {
    if (ph.received === ph.n) return resolve('complete');
    const timer = setInterval(() => {
      const t = nowMs();
      if (t - ph.lastProgress > stallMs) {
        clearInterval(timer);
        resolve('stalled');
      } else if (t > hardDeadline) {
        clearInterval(timer);
        resolve('deadline');
      }
    }, 100);
    ph.done = () => {
      clearInterval(timer);
      resolve('complete');
    };
  });
}

/** Closed loop: at most `window` tasks in flight. */
export async function closedLoop(
  driver: Driver,
  ph: Phase,
  window: number,
  limits: { hardMs: number; stallMs: number },
) {
  let next = 0;
  let inflight = 0;
  const pump = () => {
    while (inflight < window && next < ph.n) {
      const i = next++;
      inflight++;
      const t = nowMs();
      ph.sched[i] = t;
      ph.sentAt[i] = t;
      driver.submit(ph.tasks[i]!);
    }
  };
  ph.onFirst = () => {
    inflight--;
    pump();
  };
  const t0 = nowMs();
  ph.lastProgress = t0;
  pump();
  const how = await waitAll(ph, t0 + limits.hardMs, limits.stallMs);
  const tLast = lastResultAt(ph);
  return { how, t0, tLast, submitted: next };
}

/** Open loop: task i is due at t0 + i/rate, whatever the system is doing (no coordinated omission). */
export async function openLoop(
  driver: Driver,
  ph: Phase,
  rate: number,
  limits: { hardMs: number; stallMs: number },
) {
  const interval = 1000 / rate;
  const t0 = nowMs() + 20;
  let next = 0;
  let maxLag = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const t = nowMs();
      while (next < ph.n && t0 + next * interval <= t) {
        const i = next++;
        ph.sched[i] = t0 + i * interval;
        const s = nowMs();
        ph.sentAt[i] = s;
        maxLag = Math.max(maxLag, s - ph.sched[i]!);
        driver.submit(ph.tasks[i]!);
      }
      if (next < ph.n) setTimeout(tick, 1);
      else resolve();
    };
    setTimeout(tick, Math.max(0, t0 - nowMs()));
  });
  const tLastSubmit = nowMs();
  ph.lastProgress = Math.max(ph.lastProgress, tLastSubmit);
  const how = await waitAll(ph, tLastSubmit + limits.hardMs, limits.stallMs);
  const tLast = lastResultAt(ph);
  return { how, t0, tLast, tLastSubmit, submitted: next, maxLag };
}
