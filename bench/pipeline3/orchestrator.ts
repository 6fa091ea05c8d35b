import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { createChannel, createClient } from 'nice-grpc';
import { serviceEnv, serviceNodeFlags } from '../../cli/node-flags';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import type { GetStoreStatsResponse } from '../../gen/dsat/status/v1/status';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { procStats, type ProcStats } from '../proc-stats';
import { round } from './loops';
import { PIPELINE3 } from './pipeline';

/** The bench's own files: .ts from the sources, .js when bin/dsat.js runs dist/. */
const EXT = path.extname(__filename);
const ROOT = path.join(__dirname, EXT === '.ts' ? '../..' : '../../..');
/** What node needs to run this build's files: tsx for the sources. */
const LOADER = EXT === '.ts' ? ['--require', 'tsx/cjs'] : [];
/**
 * The CLI of this very build: bin/dsat.js would pick dist/ or the sources afresh for each
 * process, and a source file saved during a benchmark would switch its later processes to tsx.
 */
const DSAT_CLI = [...LOADER, path.join(ROOT, EXT === '.ts' ? 'cli/main.ts' : 'dist/cli/main.js')];

export interface BenchOptions {
  readonly tasks: number;
  readonly window: number;
  /** Tasks per second of the L runs: L is measured at each rate in turn. */
  readonly rates: readonly number[];
  readonly durationS: number;
  readonly warmup: number;
  readonly runs: number;
  readonly modes: readonly ('T' | 'L')[];
  readonly sync: boolean;
  /** Worker slots per stage process. */
  readonly concurrency: number;
  /** Extra environment for every dsat process, e.g. OTEL_* to measure tracing on. */
  readonly env?: NodeJS.ProcessEnv;
  readonly system?: string;
  readonly progress?: (line: string) => void;
  /** Called about four times a second while a run's client waits for tasks. */
  readonly onTasks?: (run: string, done: number, total: number) => void;
}

/** One measurement: T, or L at one offered rate. */
export type Measurement = { readonly mode: 'T' } | { readonly mode: 'L'; readonly rate: number };

/** The measurements of a benchmark, in order: each mode, and L once per rate. */
export function measurements(
  modes: readonly ('T' | 'L')[],
  rates: readonly number[],
): Measurement[] {
  return modes.flatMap((mode): Measurement[] =>
    mode === 'T' ? [{ mode }] : rates.map((rate) => ({ mode, rate })),
  );
}

/** How progress and summary lines name a measurement: T, or L with its rate. */
export function measurementLabel(m: { readonly mode: 'T' | 'L'; readonly rate?: number }): string {
  return m.mode === 'T' ? 'T' : `L at ${m.rate}/s`;
}

export interface Proc {
  readonly name: string;
  readonly role: 'server' | 'stage' | 'client';
  readonly child: ChildProcess;
}

function startDsat(
  name: string,
  role: Proc['role'],
  args: string[],
  env: NodeJS.ProcessEnv,
  log: fs.WriteStream,
) {
  const child = spawn(
    process.execPath,
    [...serviceNodeFlags(args[0]!, nodeArgs()), ...DSAT_CLI, ...args],
    {
      cwd: ROOT,
      env: serviceEnv({ ...process.env, DSAT_LOG_LEVEL: 'warn', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  child.stderr!.on('data', (c: Buffer) => log.write(`[${name}] ${c.toString()}`));
  const ready = new Promise<string>((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      log.write(`[${name}] ${line}\n`);
      const m = /listening on (\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready`)));
  });
  return { proc: { name, role, child } as Proc, ready };
}

/**
 * Why a run that did not get every task back ended: the services that exited meanwhile (with their
 * code or signal), else how the client's wait ended. Undefined for a complete run.
 */
export function endedEarly(
  procs: readonly Proc[],
  result: { readonly how?: unknown; readonly warmup?: { readonly how?: unknown } },
): string | undefined {
  const hows = [result.warmup?.how, result.how].filter((h) => h !== undefined);
  if (hows.every((h) => h === 'complete')) return undefined;
  const exited = procs
    .filter((p) => p.role !== 'client')
    .filter((p) => p.child.exitCode !== null || p.child.signalCode !== null)
    .map((p) => `${p.name} exited (${p.child.signalCode ?? `code ${String(p.child.exitCode)}`})`);
  const why = exited.length > 0 ? exited.join(', ') : 'no service exited';
  const how = hows.find((h) => h !== 'complete');
  return `the run ${how === 'deadline' ? 'ran past its deadline' : String(how)} (${why})`;
}

async function waitFor(what: string, ms: number, check: () => Promise<boolean>) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Extra node flags for the processes a benchmark starts, from DSAT_BENCH_NODE_ARGS, e.g.
 * `--cpu-prof` (not allowed in NODE_OPTIONS).
 */
export function nodeArgs(): string[] {
  return (process.env.DSAT_BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
}

async function stopAll(procs: Proc[]) {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve();
          const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
          p.child.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          p.child.kill('SIGTERM');
        }),
    ),
  );
}

export type RunRecord = Record<string, unknown> & { mode: string; rep: number };

async function runOnce(opts: BenchOptions, m: Measurement, rep: number): Promise<RunRecord> {
  const mode = m.mode;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsat-bench-'));
  const logPath = path.join(dir, 'processes.log');
  const log = fs.createWriteStream(logPath);
  const env = opts.env ?? {};
  const procs: Proc[] = [];
  const record: RunRecord = { type: 'run', system: opts.system ?? 'dsat', mode, rep };
  const marks: Record<string, Record<string, ProcStats | null>> = {};
  const storeAt: Record<string, Promise<GetStoreStatsResponse | undefined>> = {};
  const selfAt: Record<string, NodeJS.CpuUsage> = {};
  const started = Date.now();
  try {
    const status = startDsat(
      'status',
      'server',
      [
        'status',
        '--port',
        '0',
        '--data-dir',
        path.join(dir, 'data'),
        ...(opts.sync ? [] : ['--no-sync']),
      ],
      { ...env, OTEL_SERVICE_NAME: 'dsat-status' },
      log,
    );
    procs.push(status.proc);
    const statusAddress = await status.ready;
    const statusClient = createClient(StatusServiceDefinition, createChannel(statusAddress));
    const tracker = startDsat(
      'tracker',
      'server',
      ['tracker', '--port', '0', '--status-address', statusAddress],
      { ...env, OTEL_SERVICE_NAME: 'dsat-tracker' },
      log,
    );
    procs.push(tracker.proc);
    const trackerAddress = await tracker.ready;
    const router = startDsat(
      'router',
      'server',
      [
        'router',
        '--port',
        '0',
        '--status-address',
        statusAddress,
        '--tracker-address',
        trackerAddress,
      ],
      { ...env, OTEL_SERVICE_NAME: 'dsat-router' },
      log,
    );
    procs.push(router.proc);
    const routerAddress = await router.ready;

    const trackerClient = createClient(TrackerServiceDefinition, createChannel(trackerAddress));
    await trackerClient.applyPipeline({ pipeline: PIPELINE3, validateOnly: false });
    const stages: Promise<string>[] = [];
    for (const stage of ['stage3', 'stage2', 'stage1']) {
      const w = startDsat(
        stage,
        'stage',
        [
          'worker',
          '--port',
          '0',
          '--routers',
          routerAddress,
          '--tracker-address',
          trackerAddress,
          '--stages',
          stage,
          '--concurrency',
          String(opts.concurrency),
          '--handler',
          path.join(__dirname, `handlers${EXT}`),
        ],
        { ...env, OTEL_SERVICE_NAME: `dsat-worker-${stage}` },
        log,
      );
      procs.push(w.proc);
      stages.push(w.ready);
    }
    await Promise.all(stages);
    const routerClient = createClient(RouterServiceDefinition, createChannel(routerAddress));
    await waitFor('a worker on every stage', 30_000, async () => {
      const load = await routerClient.getRouterLoad({});
      return ['stage1', 'stage2', 'stage3'].every(
        (s) => (load.stages.find((l) => l.stage === s)?.workers ?? 0) > 0,
      );
    });

    const client = fork(path.join(__dirname, `client${EXT}`), [], {
      cwd: ROOT,
      execArgv: LOADER,
      env: {
        ...process.env,
        BENCH_MODE: mode,
        BENCH_N: String(opts.tasks),
        BENCH_WINDOW: String(opts.window),
        BENCH_RATE: String(m.mode === 'L' ? m.rate : 0),
        BENCH_DURATION_S: String(opts.durationS),
        BENCH_WARMUP: String(opts.warmup),
        BENCH_TAG: `r${rep}${mode}`,
        BENCH_ROUTER: routerAddress,
        BENCH_STATUS: statusAddress,
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    client.stderr!.on('data', (c: Buffer) => log.write(`[client] ${c.toString()}`));
    procs.push({ name: 'client', role: 'client', child: client });
    const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
      client.on('message', (msg: { type: string; name?: string }) => {
        if (msg.type === 'tasks') {
          const t = msg as { done?: number; total?: number; phase?: string };
          opts.onTasks?.(
            `run ${rep}/${opts.runs} ${measurementLabel(m)}${t.phase === 'warmup' ? ' (warm-up)' : ''}`,
            t.done ?? 0,
            t.total ?? 0,
          );
        } else if (msg.type === 'mark' && msg.name) {
          marks[msg.name] = Object.fromEntries(
            procs.map((p) => [p.name, procStats(p.child.pid!) ?? null]),
          );
          storeAt[msg.name] = statusClient.getStoreStats({}).catch(() => undefined);
          selfAt[msg.name] = process.cpuUsage();
        } else if (msg.type === 'result') resolve(msg as Record<string, unknown>);
      });
      client.once('exit', (code) => reject(new Error(`client exited (${code}) without a result`)));
    });
    delete result.type;
    Object.assign(record, result);
    const ended = endedEarly(procs, result);
    if (ended !== undefined) {
      record.log = logPath;
      record.error = `${ended}; their output: ${logPath}`;
    }
    let hwmTotal = 0;
    let hwmSystem = 0;
    let cpuMeasure = 0;
    const per: Record<string, unknown> = {};
    for (const p of procs) {
      const st = procStats(p.child.pid!);
      if (!st) continue;
      const a = marks['measure-start']?.[p.name];
      const b = marks['measure-end']?.[p.name];
      const cpu = a && b ? b.cpuS - a.cpuS : null;
      per[p.name] = {
        hwm_mb: round(st.hwmKb / 1024, 1),
        cpu_s: st.cpuS,
        cpu_measure_s: cpu === null ? null : round(cpu, 2),
        // Of which the kernel's: system calls, wake-ups, page faults.
        cpu_system_measure_s: a && b ? round(b.systemS - a.systemS, 2) : null,
      };
      hwmTotal += st.hwmKb;
      if (p.role !== 'client') hwmSystem += st.hwmKb;
      if (cpu !== null) cpuMeasure += cpu;
    }
    record.peak_rss_total_mb = round(hwmTotal / 1024, 1);
    record.peak_rss_system_mb = round(hwmSystem / 1024, 1);
    record.cpu_measure_s = round(cpuMeasure, 2);
    if (typeof record.received === 'number' && record.received > 0) {
      record.cpu_ms_per_task = round((cpuMeasure * 1000) / record.received, 4);
    }
    record.procs = per;
    const [s0, s1] = [selfAt['measure-start'], selfAt['measure-end']];
    // This process's own CPU in the window: the span receiver when tracing, else next to nothing.
    if (s0 && s1)
      record.bench_process_cpu_s = round((s1.user + s1.system - s0.user - s0.system) / 1e6, 2);
    const [a, b] = [await storeAt['measure-start'], await storeAt['measure-end']];
    if (a && b && typeof record.received === 'number' && record.received > 0) {
      // How the store saw the measured tasks: fewer commits per task means fewer syncs in the path.
      const commits = b.commits - a.commits;
      const transitions = b.transitions - a.transitions;
      record.store = {
        commits,
        transitions,
        puts: b.puts - a.puts,
        commits_per_task: round(commits / record.received, 2),
        transitions_per_commit: round(transitions / Math.max(1, commits), 1),
      };
    }
  } catch (e) {
    record.error = String(e instanceof Error ? e.message : e);
    record.log = logPath;
  } finally {
    for (const role of ['client', 'stage', 'server'] as const)
      await stopAll(procs.filter((p) => p.role === role));
    record.wall_s = round((Date.now() - started) / 1000, 1);
    log.end();
    if (!record.error) fs.rmSync(dir, { recursive: true, force: true });
  }
  return record;
}

function aggregate(runs: RunRecord[], key: string) {
  const v = runs
    .map((r) => (typeof r[key] === 'number' ? (r[key] as number) : null))
    .filter((x): x is number => x !== null);
  if (v.length === 0) return null;
  v.sort((a, b) => a - b);
  const med = v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
  return { median: round(med, 3), min: v[0], max: v[v.length - 1], runs: v.length };
}

function nested(runs: RunRecord[], outer: string, key: string) {
  return aggregate(
    runs.map((r) => ({ ...r, [key]: (r[outer] as Record<string, number> | undefined)?.[key] })),
    key,
  );
}

/** One summary line per measurement, in the peers' shape. */
export function summarize(system: string, m: Measurement, runs: RunRecord[]) {
  const sum = (k: string) =>
    runs.reduce((a, r) => a + (typeof r[k] === 'number' ? (r[k] as number) : 0), 0);
  const base = {
    type: 'summary',
    system,
    measurement: m.mode,
    reps: runs.length,
    lost_total: sum('lost'),
    dups_total: sum('dups'),
    bad_total: sum('bad_content'),
    errors: runs.filter((r) => r.error).map((r) => r.error),
    peak_rss_total_mb: aggregate(runs, 'peak_rss_total_mb'),
    peak_rss_system_mb: aggregate(runs, 'peak_rss_system_mb'),
    cpu_ms_per_task: aggregate(runs, 'cpu_ms_per_task'),
  };
  if (m.mode === 'T')
    return {
      ...base,
      tasks_per_s: aggregate(runs, 'tasks_per_s'),
      elapsed_s: aggregate(runs, 'elapsed_s'),
    };
  return {
    ...base,
    offered_rate: m.rate,
    achieved_rate: aggregate(runs, 'achieved_rate'),
    p50_ms: nested(runs, 'latency', 'p50_ms'),
    p90_ms: nested(runs, 'latency', 'p90_ms'),
    p99_ms: nested(runs, 'latency', 'p99_ms'),
    max_ms: nested(runs, 'latency', 'max_ms'),
  };
}

/**
 * What tracing cost, pair by pair: each untraced run against the traced run made next to it
 * (the runs of one mode spread by ±15% on a busy machine; pairs see the same machine).
 */
export function summarizeTracingCost(
  system: string,
  m: Measurement,
  untraced: readonly RunRecord[],
  traced: readonly RunRecord[],
) {
  const num = (r: RunRecord, key: string) =>
    typeof r[key] === 'number' ? (r[key] as number) : NaN;
  const p99 = (r: RunRecord) => (r.latency as Record<string, number> | undefined)?.p99_ms ?? NaN;
  const pairs: RunRecord[] = untraced.flatMap((u, i) => {
    const t = traced[i];
    if (!t || u.error || t.error) return [];
    return [
      {
        mode: m.mode,
        rep: u.rep,
        throughput_drop_pct: round((1 - num(t, 'tasks_per_s') / num(u, 'tasks_per_s')) * 100, 1),
        cpu_ms_per_task_added: round(num(t, 'cpu_ms_per_task') - num(u, 'cpu_ms_per_task'), 4),
        p99_ms_added: round(p99(t) - p99(u), 3),
      },
    ];
  });
  const finite = (key: string) =>
    aggregate(
      pairs.filter((p) => Number.isFinite(p[key])),
      key,
    );
  return {
    type: 'tracing_cost',
    system,
    measurement: m.mode,
    pairs: pairs.length,
    ...(m.mode === 'T'
      ? { throughput_drop_pct: finite('throughput_drop_pct') }
      : { offered_rate: m.rate, p99_ms_added: finite('p99_ms_added') }),
    cpu_ms_per_task_added: finite('cpu_ms_per_task_added'),
  };
}

/** The name a run reports when its options give none: durable or not. */
export function systemName(sync: boolean): string {
  return sync ? 'dsat' : 'dsat-nosync';
}

export async function runPipeline3(opts: BenchOptions) {
  const system = opts.system ?? systemName(opts.sync);
  const out: { runs: RunRecord[]; summaries: ReturnType<typeof summarize>[] } = {
    runs: [],
    summaries: [],
  };
  for (const m of measurements(opts.modes, opts.rates)) {
    const runs: RunRecord[] = [];
    for (let rep = 1; rep <= opts.runs; rep++) {
      const r = await runOnce({ ...opts, system }, m, rep);
      runs.push(r);
      opts.progress?.(
        `run ${rep}/${opts.runs} ${measurementLabel(m)}: ` +
          (m.mode === 'T'
            ? `tasks/s=${String(r.tasks_per_s)}`
            : `p50=${String((r.latency as Record<string, unknown> | undefined)?.p50_ms)} p99=${String((r.latency as Record<string, unknown> | undefined)?.p99_ms)}`) +
          ` lost=${String(r.lost)} dups=${String(r.dups)} cpu ms/task=${String(r.cpu_ms_per_task)} rss=${String(r.peak_rss_system_mb)}MB${r.error ? ` ERROR ${String(r.error)}` : ''}`,
      );
    }
    out.runs.push(...runs);
    out.summaries.push(summarize(system, m, runs));
  }
  return out;
}
