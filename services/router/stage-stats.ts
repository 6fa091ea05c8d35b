import type { StageLoad } from '../../gen/dsat/router/v1/router';

const WINDOW_S = 60;

/** Counters of one stage on this router, with finished tasks per second over the last minute. */
export class StageStats {
  completed = 0;
  failed = 0;
  inFlight = 0;
  private readonly perSecond = new Array<number>(WINDOW_S).fill(0);
  private second = -1;
  private readonly startedS: number;

  constructor(private readonly nowS: () => number = () => Math.floor(performance.now() / 1000)) {
    this.startedS = this.nowS();
  }

  private advance(): number {
    const s = this.nowS();
    if (this.second < 0) this.second = s;
    for (let i = this.second + 1; i <= s && i - this.second <= WINDOW_S; i++) {
      this.perSecond[i % WINDOW_S] = 0;
    }
    if (s - this.second > WINDOW_S) this.perSecond.fill(0);
    this.second = s;
    return s;
  }

  finished(ok: boolean): void {
    if (ok) this.completed++;
    else this.failed++;
    const s = this.advance();
    this.perSecond[s % WINDOW_S]! += 1;
  }

  throughput(): number {
    const s = this.advance();
    const span = Math.min(WINDOW_S, Math.max(1, s - this.startedS));
    let sum = 0;
    for (let i = 0; i < span; i++) sum += this.perSecond[(s - i + WINDOW_S) % WINDOW_S]!;
    return sum / span;
  }

  load(stage: string, queueDepth: number, workers: number, freeCredit: number): StageLoad {
    return {
      stage,
      queueDepth,
      inFlight: this.inFlight,
      workers,
      freeCredit,
      completed: this.completed,
      failed: this.failed,
      throughputPerS: this.throughput(),
    };
  }
}
