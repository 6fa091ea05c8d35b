import type { Clock } from './monotonic-clock';

/** setTimeout's longest delay (2^31-1 ms, ~24.8 days); longer deadlines wake up and wait again. */
const MAX_TIMER_DELAY_MS = 2_147_483_647;

/** One armed deadline. */
export interface Due<T> {
  readonly key: string;
  /** The monotonic time it was due at. */
  readonly at: number;
  readonly value: T;
}

export interface DeadlineScheduler<T> {
  /** Arms `key` to fall due at monotonic time `at`, replacing what it was armed with. */
  arm(key: string, at: number, value: T): void;
  /** Disarms `key`; true when it was armed. */
  disarm(key: string): boolean;
  get(key: string): Due<T> | undefined;
  readonly size: number;
  /** The earliest armed deadline. */
  nextAt(): number | undefined;
  /** Disarms everything. */
  clear(): void;
  /** Clears the one pending setTimeout; nothing falls due any more. */
  stop(): void;
}

export interface DeadlineSchedulerOptions<T> {
  readonly clock: Clock;
  /** Called with every item that fell due, earliest first, each one time only. */
  readonly onDue: (due: Due<T>[]) => void;
}

interface Node<T> {
  key: string;
  at: number;
  /** Arm order: equal deadlines fall due in the order they were armed. */
  seq: number;
  value: T;
  index: number;
}

/**
 * Every deadline of the tracker in one indexed binary min-heap, with ONE armed setTimeout for the
 * earliest. Arm, re-arm and disarm are O(log n) and allocate nothing per call beyond the node, so
 * following a feed of 10k tasks/s costs a heap operation per transition, not a timer per task.
 * The timer is moved only when a deadline earlier than the armed one arrives; when it fires
 * early (the earliest was disarmed or rounded), it simply re-arms for the new earliest.
 */
export function createDeadlineScheduler<T>(
  options: DeadlineSchedulerOptions<T>,
): DeadlineScheduler<T> {
  const { clock, onDue } = options;
  const heap: Node<T>[] = [];
  const byKey = new Map<string, Node<T>>();
  let seq = 0;
  let timer: NodeJS.Timeout | undefined;
  let timerAt = Infinity;
  let stopped = false;

  const less = (a: Node<T>, b: Node<T>) => a.at < b.at || (a.at === b.at && a.seq < b.seq);
  const place = (n: Node<T>, i: number) => {
    heap[i] = n;
    n.index = i;
  };
  const up = (i: number) => {
    const n = heap[i] as Node<T>;
    while (i > 0) {
      const parentIndex = (i - 1) >> 1;
      const parent = heap[parentIndex] as Node<T>;
      if (!less(n, parent)) break;
      place(parent, i);
      i = parentIndex;
    }
    place(n, i);
  };
  const down = (i: number) => {
    const n = heap[i] as Node<T>;
    const len = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= len) break;
      const r = l + 1;
      const c = r < len && less(heap[r] as Node<T>, heap[l] as Node<T>) ? r : l;
      const child = heap[c] as Node<T>;
      if (!less(child, n)) break;
      place(child, i);
      i = c;
    }
    place(n, i);
  };
  const removeAt = (i: number) => {
    const last = heap.pop() as Node<T>;
    if (i < heap.length) {
      place(last, i);
      up(i);
      down(last.index);
    }
  };

  const schedule = () => {
    const first = heap[0];
    if (stopped || first === undefined) return;
    if (timer !== undefined && timerAt <= first.at) return;
    if (timer !== undefined) clearTimeout(timer);
    const delay = Math.min(
      MAX_TIMER_DELAY_MS,
      Math.max(0, Math.ceil(first.at - clock.monotonicMs())),
    );
    timerAt = first.at;
    timer = setTimeout(fire, delay);
    timer.unref();
  };

  const fire = () => {
    timer = undefined;
    timerAt = Infinity;
    const now = clock.monotonicMs();
    const due: Due<T>[] = [];
    for (let first = heap[0]; first !== undefined && first.at <= now; first = heap[0]) {
      removeAt(0);
      byKey.delete(first.key);
      due.push({ key: first.key, at: first.at, value: first.value });
    }
    schedule();
    if (due.length > 0) onDue(due);
  };

  return {
    arm(key, at, value) {
      const existing = byKey.get(key);
      if (existing !== undefined) {
        existing.at = at;
        existing.seq = seq++;
        existing.value = value;
        up(existing.index);
        down(existing.index);
      } else {
        const n: Node<T> = { key, at, seq: seq++, value, index: heap.length };
        heap.push(n);
        byKey.set(key, n);
        up(n.index);
      }
      schedule();
    },
    disarm(key) {
      const n = byKey.get(key);
      if (n === undefined) return false;
      byKey.delete(key);
      removeAt(n.index);
      return true;
    },
    get(key) {
      const n = byKey.get(key);
      return n === undefined ? undefined : { key: n.key, at: n.at, value: n.value };
    },
    get size() {
      return heap.length;
    },
    nextAt: () => heap[0]?.at,
    clear() {
      heap.length = 0;
      byKey.clear();
    },
    stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      timerAt = Infinity;
    },
  };
}
