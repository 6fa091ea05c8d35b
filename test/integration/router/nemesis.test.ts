import path from 'node:path';
import type { SubmitTasksEntry } from '../../../gen/dsat/router/v1/router';
import { checkHistory, HistoryLog, readHistory } from '../../helpers/history-checker';
import type { NetnsLink } from '../../helpers/netns';
import { NetnsLab, netnsUnavailable } from '../../helpers/netns';
import type { RunningProcess } from '../../helpers/processes';
import { ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { linear } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

/**
 * T22: status, tracker and router as processes, WORKERS worker processes each in its own network
 * namespace, N tasks, and a random nemesis (kill -9 and restart, SIGSTOP/SIGCONT, link down/up)
 * for NEMESIS_MS, then heal. The history checker must find nothing lost, nothing unexpected, no
 * execution without a recorded attempt, and every task terminal by heal + 2 × the largest timeout.
 *
 * A minute of nemesis by default (T22); DSAT_NEMESIS_MS shortens it, DSAT_NEMESIS_SEED
 * replays a schedule (the seed is printed), DSAT_NEMESIS_TASKS changes N.
 */
const N = Number(process.env.DSAT_NEMESIS_TASKS ?? 1000);
const NEMESIS_MS = Number(process.env.DSAT_NEMESIS_MS ?? 60_000);
const SEED = Number(process.env.DSAT_NEMESIS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const WORKERS = 4;
const CONCURRENCY = 8;
const KEEPALIVE_MS = 2_000;
const KEEPALIVE_TIMEOUT_MS = 1_000;
/** The heartbeat timeout: the largest timeout of the mesh in this test. */
const LEASE_MS = 5_000;
const LARGEST_TIMEOUT_MS = Math.max(LEASE_MS, KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS);
/** Tasks are submitted over the whole nemesis: faults keep meeting work, and some is in flight
 * at the heal, so the deadline after it means something. */
const SUBMIT_SPAN_MS = NEMESIS_MS;
const RECORDED = path.join(__dirname, '../../fixtures/handlers/recorded.ts');

jest.setTimeout(NEMESIS_MS + 150_000);

/** mulberry32: a small seeded generator, so that a seed names a schedule. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type FaultKind = 'kill' | 'pause' | 'partition';

interface Fault {
  readonly at: number;
  readonly worker: number;
  readonly kind: FaultKind;
  readonly ms: number;
}

/**
 * The schedule: a fault every 1–3 s on a worker that has none, never all workers at once; the
 * first three faults are one of each kind. Kills restart after 1–3 s; pauses last 1–8 s (some
 * beyond the lease); partitions 2–10 s.
 */
function schedule(seed: number, durationMs: number): Fault[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const kinds: FaultKind[] = ['kill', 'pause', 'partition'];
  const first = [...kinds].sort(() => r() - 0.5);
  const busyUntil = new Array<number>(WORKERS).fill(0);
  const out: Fault[] = [];
  for (let at = 1_000 + r() * 1_000; at < durationMs; at += 1_000 + r() * 2_000) {
    const free = busyUntil.map((u, i) => (u <= at ? i : -1)).filter((i) => i >= 0);
    if (free.length <= 1) continue;
    const kind = first.shift() ?? pick(kinds);
    const ms =
      kind === 'kill'
        ? 1_000 + r() * 2_000
        : kind === 'pause'
          ? 1_000 + r() * 7_000
          : 2_000 + r() * 8_000;
    const worker = pick(free);
    const end = Math.min(at + ms, durationMs);
    busyUntil[worker] = end + 500;
    out.push({ at: Math.round(at), worker, kind, ms: Math.round(end - at) });
  }
  return out;
}

const unavailable = netnsUnavailable();

describe('T22: a nemesis of kills, pauses and partitions', () => {
  const lab = new NetnsLab('n');
  const mesh = new ProcessMesh();
  const dir = tempDir('dsat-nemesis-');
  beforeAll(() => {
    if (unavailable) throw new Error(`${unavailable}: T22 cannot run here`);
  });
  afterAll(async () => {
    await mesh.stop();
    await lab.cleanup();
    dir.cleanup();
  });

  it(`${N} tasks through ${NEMESIS_MS / 1000} s of faults: nothing lost, nothing unexpected, every extra execution explained, all terminal by heal + 2 × ${LARGEST_TIMEOUT_MS} ms`, async () => {
    const plan = schedule(SEED, NEMESIS_MS);
    process.stderr.write(
      `T22 nemesis seed ${SEED} (DSAT_NEMESIS_SEED=${SEED} replays it): ${plan.length} faults\n` +
        plan.map((f) => `  +${f.at} ms ${f.kind} w${f.worker} for ${f.ms} ms`).join('\n') +
        '\n',
    );
    const log = new HistoryLog(path.join(dir.path, 'history.jsonl'));
    const kaFlags = [
      '--keepalive-time',
      `${KEEPALIVE_MS}ms`,
      '--keepalive-timeout',
      `${KEEPALIVE_TIMEOUT_MS}ms`,
    ];
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker();
    const router = await mesh.startRouter(['--host', '0.0.0.0', ...kaFlags]);
    const port = router.address.split(':').pop()!;
    const p = linear('nemesis', ['work'], { heartbeatTimeoutMs: LEASE_MS, maxAttempts: 20 });
    p.stages[0]!.backoff = {
      initial: { seconds: 0, nanos: 100_000_000 },
      max: { seconds: 1, nanos: 0 },
      multiplier: 2,
      jitter: 0.2,
    };
    await mesh.savePipeline(p);

    const links: NetnsLink[] = [];
    for (let i = 0; i < WORKERS; i++) links.push(await lab.add(i));
    const workers: RunningProcess[] = [];
    const startWorker = async (i: number) => {
      const w = await mesh.startWorker(
        RECORDED,
        ['work'],
        ['--concurrency', String(CONCURRENCY), '--max-reconnect-backoff', '1s', ...kaFlags],
        [`${links[i]!.hostIp}:${port}`],
        { DSAT_TEST_HISTORY: log.file, DSAT_WORKER_ID: `w${i}` },
        links[i]!.ns,
      );
      workers[i] = w.p;
    };
    await Promise.all(links.map((_, i) => startWorker(i)));
    await mesh.waitForWorkers(['work'], mesh.routers[0], WORKERS);

    const feed = new ResultFeed((t) => log.terminal(t));
    await feed.start(mesh.status, 'nemesis');

    // Faults run on their own clock while tasks are submitted in batches beside them.
    const r = rng(SEED ^ 0x5bd1e995);
    const started = Date.now();
    const timers = new Set<NodeJS.Timeout>();
    const faultErrors: string[] = [];
    let healed = false;
    const at = (ms: number, f: () => unknown) => {
      if (healed) return;
      const t = setTimeout(
        () => {
          timers.delete(t);
          void Promise.resolve(f()).catch((err: unknown) => faultErrors.push(String(err)));
        },
        Math.max(0, started + ms - Date.now()),
      );
      timers.add(t);
    };
    const state: ('ok' | FaultKind)[] = new Array<'ok' | FaultKind>(WORKERS).fill('ok');
    const done: Record<FaultKind, number> = { kill: 0, pause: 0, partition: 0 };
    const endFault = async (i: number) => {
      const kind = state[i];
      state[i] = 'ok';
      if (kind === 'kill') await startWorker(i);
      else if (kind === 'pause') workers[i]!.child.kill('SIGCONT');
      else if (kind === 'partition') await links[i]!.up();
    };
    for (const f of plan) {
      at(f.at, async () => {
        if (state[f.worker] !== 'ok') return;
        state[f.worker] = f.kind;
        done[f.kind]++;
        if (f.kind === 'kill') {
          workers[f.worker]!.kill('SIGKILL');
          await workers[f.worker]!.exited;
        } else if (f.kind === 'pause') workers[f.worker]!.child.kill('SIGSTOP');
        else await links[f.worker]!.down();
        at(f.at + f.ms, () => endFault(f.worker));
      });
    }

    const batches = 20;
    const inputs = Array.from({ length: N }, (_, i) => ({ i, ms: 50 + Math.floor(r() * 200) }));
    for (let b = 0; b < batches; b++) {
      const wait = started + (b * SUBMIT_SPAN_MS) / batches - Date.now();
      if (wait > 0) await new Promise((res) => setTimeout(res, wait));
      const slice = inputs.slice((b * N) / batches, ((b + 1) * N) / batches);
      const entries: SubmitTasksEntry[] = slice.map((input) => ({
        clientRef: `t${input.i}`,
        task: {
          pipeline: 'nemesis',
          payload: Buffer.from(JSON.stringify(input)),
          contentType: 'application/json',
          idempotencyKey: `nemesis-${SEED}-${input.i}`,
          priority: 0,
          traceparent: '',
        },
      }));
      const ids = await submitMany(mesh.router(), entries);
      const ackedAt = Date.now();
      for (const input of slice) {
        const ref = `t${input.i}`;
        log.append({ kind: 'submit', ref, taskId: ids.get(ref)!, at: ackedAt, input });
      }
    }

    // Heal: cancel what is pending, end every fault still on.
    await new Promise((res) => setTimeout(res, Math.max(0, started + NEMESIS_MS - Date.now())));
    healed = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    const healAt = Date.now();
    await Promise.all(state.map((s, i) => (s === 'ok' ? undefined : endFault(i))));
    const terminalBy = healAt + 2 * LARGEST_TIMEOUT_MS;
    await feed.waitFor(N, Math.max(0, terminalBy - Date.now()) + 30_000).catch(() => undefined);
    await feed.stop();

    const ids = readHistory(log.file).flatMap((rec) => (rec.kind === 'submit' ? [rec.taskId] : []));
    for (const taskId of ids) {
      log.history(taskId, (await mesh.status.getTaskHistory({ taskId })).transitions);
    }
    const report = checkHistory(readHistory(log.file), {
      terminalBy,
      resultMatches: (input, output) =>
        (JSON.parse(output) as { i: number }).i === (input as { i: number }).i,
    });
    process.stderr.write(
      `T22 seed ${SEED}: faults ${JSON.stringify(done)}, ${report.acked} acked, ${report.terminal} terminal ${JSON.stringify(report.byState)}, ${report.executions} executions, ${report.extraExecutions} extra executions, ${report.extraAttempts} extra attempts ${JSON.stringify(report.extraAttemptsByReason)}; last terminal ${Math.max(...readHistory(log.file).flatMap((rec) => (rec.kind === 'terminal' ? [rec.at] : []))) - healAt} ms after heal\n`,
    );
    expect(faultErrors).toEqual([]);
    expect(done.kill + done.pause + done.partition).toBeGreaterThanOrEqual(3);
    expect({
      lost: report.lost,
      unexpected: report.unexpected,
      duplicated: report.duplicated,
      illegal: report.illegal,
      late: report.late,
    }).toEqual({ lost: [], unexpected: [], duplicated: [], illegal: [], late: [] });
    expect(report.acked).toBe(N);
    expect(report.extraExecutions).toBeLessThanOrEqual(report.extraAttempts);
    expect(report.byState).toEqual({ TASK_STATE_SUCCEEDED: N });
    // The faults reached the tasks: some attempts were lost and redone.
    expect(report.extraAttempts).toBeGreaterThan(0);
  });
});
