import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import type { RunningProcess } from '../helpers/processes';
import {
  REPO_ROOT,
  spawnDsat,
  startDsatUp,
  stopDsatUp,
  upAddress,
  within,
} from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

async function dsat(args: string[], env: NodeJS.ProcessEnv) {
  const p = spawnDsat(args, env);
  const code = await within(p.exited, 60_000, `dsat ${args.join(' ')}`);
  return { code, out: p.stdout.join('\n'), err: p.stderr.join('\n') };
}

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The samples of a Prometheus text exposition. */
async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  const samples: Sample[] = [];
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of the one sample named `name` whose labels include `labels`; 0 when none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  expect(found.length).toBeLessThanOrEqual(1);
  return found[0]?.value ?? 0;
}

/** The demo pipeline with a parse stage that times out after 1 s and gives up after 2 attempts. */
const IMPATIENT_DEMO = `name: demo
stages:
  - name: parse
    next: [hash]
    run_timeout: 1s
    max_attempts: 2
    backoff: { initial: 100ms, max: 100ms }
  - name: hash
    next: [upper]
  - name: upper
`;

describe('Prometheus metrics of dsat up', () => {
  const tmp = tempDir();
  let up: RunningProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    ({ up, env } = await startDsatUp(path.join(tmp.path, 'data'), ['--metrics-port', '0']));
  });
  afterAll(async () => {
    await stopDsatUp(up);
    tmp.cleanup();
  });

  it('count every transition by stage, state and reason (retries, timeouts, dead letters), time attempts and tasks, and show queues, credit and members', async () => {
    expect((await dsat(['submit', 'demo', '{"text":"hi"}', '--follow'], env)).code).toBe(0);
    expect((await dsat(['submit', 'demo', 'not json', '--follow'], env)).code).not.toBe(0);
    const pipeline = path.join(tmp.path, 'impatient.yaml');
    fs.writeFileSync(pipeline, IMPATIENT_DEMO);
    expect((await dsat(['pipelines', 'apply', pipeline], env)).code).toBe(0);
    // Each attempt of parse outlives its 1 s run timeout: a retry, then a dead letter.
    const slow = await dsat(['submit', 'demo', '{"text":"slow","workMs":8000}', '--follow'], env);
    expect(slow.out).toMatch(/DEAD_LETTERED/);

    const m = await scrape(upAddress(up, 'metrics'));
    const transitions = (stage: string, state: string, reason?: string) =>
      value(m, 'dsat_task_transitions_total', {
        dsat_pipeline: 'demo',
        dsat_stage: stage,
        dsat_state: state,
        ...(reason ? { dsat_reason: reason } : {}),
      });
    expect(transitions('parse', 'SUBMITTED')).toBe(3);
    expect(transitions('upper', 'SUCCEEDED', 'COMPLETED')).toBe(1);
    expect(transitions('parse', 'FAILED', 'NON_RETRYABLE_ERROR')).toBe(1);
    expect(transitions('parse', 'TIMED_OUT', 'RUN_TIMEOUT')).toBe(2);
    expect(transitions('parse', 'RETRY_WAIT')).toBe(1);
    expect(transitions('parse', 'DEAD_LETTERED', 'ATTEMPTS_EXHAUSTED')).toBe(1);

    for (const state of ['SUCCEEDED', 'FAILED', 'DEAD_LETTERED']) {
      expect(value(m, 'dsat_task_duration_count', { dsat_state: state })).toBe(1);
    }
    // The dead-lettered task ran two attempts of at least 1 s each.
    expect(value(m, 'dsat_task_duration_sum', { dsat_state: 'DEAD_LETTERED' })).toBeGreaterThan(2);
    expect(value(m, 'dsat_task_duration_bucket', { dsat_state: 'SUCCEEDED', le: '+Inf' })).toBe(1);

    for (const stage of ['parse', 'hash', 'upper']) {
      expect(
        value(m, 'dsat_router_attempts_total', { dsat_stage: stage, dsat_outcome: 'done' }),
      ).toBe(1);
      expect(
        value(m, 'dsat_router_attempt_duration_count', { dsat_stage: stage, dsat_outcome: 'done' }),
      ).toBe(1);
      expect(value(m, 'dsat_router_workers', { dsat_stage: stage })).toBe(1);
      expect(value(m, 'dsat_router_queue_depth', { dsat_stage: stage })).toBe(0);
      expect(value(m, 'dsat_router_in_flight', { dsat_stage: stage })).toBe(0);
      expect(value(m, 'dsat_router_credit', { dsat_stage: stage })).toBeGreaterThan(0);
    }
    expect(
      value(m, 'dsat_router_attempts_total', { dsat_stage: 'parse', dsat_outcome: 'failed' }),
    ).toBeGreaterThanOrEqual(1);
    expect(value(m, 'dsat_router_stale_results_total')).toBe(0);
    // The task that succeeded moved from parse to hash and from hash to upper, each held ahead.
    expect(value(m, 'dsat_router_dispatched_ahead_total', { dsat_outcome: 'committed' })).toBe(2);
    expect(value(m, 'dsat_router_dispatched_ahead_total', { dsat_outcome: 'called_off' })).toBe(0);
    // Two run timeouts and the retry's backoff.
    expect(value(m, 'dsat_tracker_timers_fired_total')).toBe(3);
    expect(value(m, 'dsat_tracker_members', { dsat_kind: 'ROUTER' })).toBe(1);
    expect(value(m, 'dsat_tracker_members', { dsat_kind: 'WORKER' })).toBe(1);
    expect(value(m, 'dsat_status_tasks_unfinished')).toBe(0);
    expect(value(m, 'dsat_status_commits_total')).toBeGreaterThan(0);
    expect(value(m, 'target_info', { service_name: 'dsat' })).toBe(1);

    const worker = (stage: string, outcome: string) =>
      value(m, 'dsat_worker_handler_duration_count', { dsat_stage: stage, dsat_outcome: outcome });
    expect(worker('parse', 'succeeded')).toBe(1);
    expect(worker('parse', 'failed')).toBe(1);
    expect(worker('upper', 'succeeded')).toBe(1);
    expect(value(m, 'dsat_worker_reports_total', { dsat_outcome: 'succeeded' })).toBe(3);
    expect(value(m, 'dsat_worker_reports_total', { dsat_outcome: 'failed' })).toBe(1);
    expect(value(m, 'dsat_worker_slots')).toBeGreaterThan(0);
    // Each timed-out attempt is taken from its handler, the last one as the task is dead-lettered.
    const deadline = Date.now() + 15_000;
    let aborted = 0;
    while (
      (aborted = value(
        await scrape(upAddress(up, 'metrics')),
        'dsat_worker_handler_duration_count',
        { dsat_stage: 'parse', dsat_outcome: 'aborted' },
      )) < 2 &&
      Date.now() < deadline
    ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(aborted).toBe(2);
    expect(value(await scrape(upAddress(up, 'metrics')), 'dsat_worker_running')).toBe(0);

    // The alerting rules shipped in deploy/ name only metrics that exist.
    const rules = YAML.parse(
      fs.readFileSync(path.join(REPO_ROOT, 'deploy/prometheus/dsat-alerts.yaml'), 'utf8'),
    ) as { groups: { rules: { alert: string; expr: string; labels: { severity: string } }[] }[] };
    const served = new Set(m.map((s) => s.name));
    const exprs = rules.groups.flatMap((g) => g.rules);
    expect(exprs.length).toBeGreaterThan(5);
    for (const rule of exprs) {
      expect(rule.labels.severity).toMatch(/^(critical|warning|info)$/);
      // Label names stand in `by (…)` and in selectors `{…}`; what is left names metrics.
      const metrics = rule.expr.replace(/by \([^)]*\)/g, '').replace(/\{[^}]*\}/g, '');
      for (const [name] of metrics.matchAll(/\bdsat_[a-z_]+/g)) {
        expect({ alert: rule.alert, metric: name, served: served.has(name) }).toEqual({
          alert: rule.alert,
          metric: name,
          served: true,
        });
      }
    }

    const elsewhere = await fetch(upAddress(up, 'metrics').replace(/\/metrics$/, '/'));
    expect(elsewhere.status).toBe(404);
  });
});

describe('Prometheus metrics of dsat up --processes', () => {
  const tmp = tempDir();
  let up: RunningProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    ({ up, env } = await startDsatUp(path.join(tmp.path, 'data'), [
      '--processes',
      '--metrics-port',
      '0',
    ]));
  });
  afterAll(async () => {
    await stopDsatUp(up);
    tmp.cleanup();
  });

  it('are served by each service process on its own port, printed beside its address', async () => {
    const urls = Object.fromEntries(
      ['status', 'tracker', 'router', 'worker'].map((name) => {
        const line = up.stdout.find((l) => l.trim().startsWith(`${name} `))!;
        return [name, /metrics (http:\/\/\S+\/metrics)/.exec(line)?.[1]];
      }),
    );
    expect(new Set(Object.values(urls)).size).toBe(4);
    expect((await dsat(['submit', 'demo', '{"text":"hi"}', '--follow'], env)).code).toBe(0);

    const status = await scrape(urls.status!);
    expect(
      value(status, 'dsat_task_transitions_total', {
        dsat_stage: 'upper',
        dsat_state: 'SUCCEEDED',
      }),
    ).toBe(1);
    expect(value(status, 'target_info', { service_name: 'dsat-status' })).toBe(1);
    const router = await scrape(urls.router!);
    expect(value(router, 'dsat_router_workers', { dsat_stage: 'parse' })).toBe(1);
    expect(value(router, 'dsat_status_commits_total')).toBe(0);
    const tracker = await scrape(urls.tracker!);
    expect(value(tracker, 'dsat_tracker_members', { dsat_kind: 'WORKER' })).toBe(1);
    const worker = await scrape(urls.worker!);
    expect(value(worker, 'target_info', { service_name: 'dsat-worker' })).toBe(1);
    expect(value(worker, 'dsat_worker_reports_total', { dsat_outcome: 'succeeded' })).toBe(3);

    // A child restarted after a crash serves its metrics where it did before.
    const routerPid = Number(
      /\(pid (\d+)\)/.exec(up.stdout.find((l) => l.trim().startsWith('router '))!)![1],
    );
    process.kill(routerPid, 'SIGKILL');
    await up.waitForLine(/router is back on/, 30_000, 'stderr');
    const again = await scrape(urls.router!);
    expect(value(again, 'target_info', { service_name: 'dsat-router' })).toBe(1);
  });
});

describe('the metrics port of a service', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('refuses a bad port naming the flag and its variable, and a port in use naming the address', async () => {
    const dataDir = path.join(tmp.path, 'data');
    const bad = await dsat(
      ['status', '--port', '0', '--data-dir', dataDir, '--metrics-port', '70000'],
      {},
    );
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--metrics-port/);
    expect(bad.err).toMatch(/DSAT_METRICS_PORT/);

    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const busy = await dsat(
        ['status', '--port', '0', '--data-dir', dataDir, '--metrics-port', String(port)],
        {},
      );
      expect(busy.code).toBe(1);
      expect(busy.err).toContain(`cannot serve metrics on 127.0.0.1:${port}: the port is in use`);
    } finally {
      taken.close();
    }
  });
});
