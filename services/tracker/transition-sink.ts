import type { TransitionOutcome, TransitionWrite } from '../../gen/dsat/status/v1/status';

/** Commits transition writes to the status store, answering one outcome per write, in order. */
export interface TransitionSink {
  /**
   * Commits `writes` in ONE store batch, so a timeout and its retry-or-dead-letter land together.
   * Rejects only when the store could not be reached; a refused write is an outcome.
   */
  commit(writes: readonly TransitionWrite[]): Promise<TransitionOutcome[]>;
}

export interface BatchingSink extends TransitionSink {
  /** Resolves once every commit asked for so far has been answered. */
  drain(): Promise<void>;
}

export interface BatchingSinkOptions {
  /** Most writes per store call; a group is never split, so one may go over. Default 1000. */
  readonly maxBatch?: number;
}

interface Pending {
  readonly writes: readonly TransitionWrite[];
  resolve(outcomes: TransitionOutcome[]): void;
  reject(err: unknown): void;
}

/**
 * Groups the commits asked for while a store call is in flight into the next call, without
 * waiting to fill a batch: one call at a time, each taking everything queued, so a burst of timeouts (10k tasks whose
 * queue timeout falls due together) costs a few store calls, not 10k.
 */
export function createBatchingSink(
  commitBatch: (writes: TransitionWrite[]) => Promise<TransitionOutcome[]>,
  options: BatchingSinkOptions = {},
): BatchingSink {
  const maxBatch = options.maxBatch ?? 1000;
  let queue: Pending[] = [];
  let inFlight: Promise<void> | undefined;

  const send = async (groups: Pending[]) => {
    const writes = groups.flatMap((g) => g.writes);
    try {
      const outcomes = await commitBatch(writes);
      if (outcomes.length !== writes.length) {
        throw new Error(
          `the store answered ${outcomes.length} outcomes for ${writes.length} writes`,
        );
      }
      let at = 0;
      for (const g of groups) {
        g.resolve(outcomes.slice(at, at + g.writes.length));
        at += g.writes.length;
      }
    } catch (err) {
      for (const g of groups) g.reject(err);
    }
  };

  // Takes the whole queue at once (never shift() it: 100k timeouts falling due together would
  // make that quadratic), then sends it in calls of at most maxBatch writes, groups kept whole.
  const pump = async () => {
    while (queue.length > 0) {
      const taken = queue;
      queue = [];
      let groups: Pending[] = [];
      let size = 0;
      for (const g of taken) {
        if (groups.length > 0 && size + g.writes.length > maxBatch) {
          await send(groups);
          groups = [];
          size = 0;
        }
        groups.push(g);
        size += g.writes.length;
      }
      await send(groups);
    }
  };

  // The pump starts on the next microtask, so every commit asked for in this turn of the event
  // loop (all the timeouts of one timer tick) shares the first store call.
  const start = () => {
    inFlight ??= Promise.resolve()
      .then(pump)
      .finally(() => {
        inFlight = undefined;
        if (queue.length > 0) start();
      });
  };

  return {
    commit(writes) {
      if (writes.length === 0) return Promise.resolve([]);
      return new Promise<TransitionOutcome[]>((resolve, reject) => {
        queue.push({ writes, resolve, reject });
        start();
      });
    },
    async drain() {
      while (inFlight !== undefined) await inFlight;
    },
  };
}
