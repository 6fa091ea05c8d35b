import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { RunningProcess } from '../helpers/processes';
import {
  spawnDsat,
  startDsatUp,
  stopDsatUp,
  UP_FREE_PORTS,
  upAddress,
  within,
} from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(180_000);

/** Runs one `dsat` client command to its end. */
async function dsat(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000) {
  const p = spawnDsat(args, env);
  const code = await within(p.exited, timeoutMs, `dsat ${args.join(' ')}`);
  return { code, out: p.stdout.join('\n'), err: p.stderr.join('\n') };
}

/** Each command exits 2 with its message on stderr (a usage error, nothing sent). */
/** Each non-empty line of a --json output or a runs file, parsed. */
function jsonLines<T>(text: string): T[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as T);
}

async function expectUsageErrors(cases: [string[], RegExp][], env: NodeJS.ProcessEnv) {
  for (const [args, message] of cases) {
    const run = await dsat(args, env);
    expect({ args, code: run.code, err: run.err }).toEqual({
      args,
      code: 2,
      err: expect.stringMatching(message) as unknown,
    });
  }
}

describe('the dsat CLI, as a user drives it', () => {
  const tmp = tempDir();
  let up: RunningProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    ({ up, env } = await startDsatUp(path.join(tmp.path, 'data')));
  });
  afterAll(async () => {
    await stopDsatUp(up);
    tmp.cleanup();
  });

  it('submits with --follow, lists, gets, and draws the trace of the demo pipeline', async () => {
    const submit = await dsat(['submit', 'demo', '{"text":"hi"}', '--follow'], env);
    expect(submit.code).toBe(0);
    // --follow prints the history first, then the live transitions from where it ends: no gap.
    for (const stage of ['parse', 'hash', 'upper']) {
      expect(submit.out).toMatch(new RegExp(`RUNNING\\s+${stage}`));
    }
    expect(submit.out).toMatch(/SUCCEEDED: \{"text":"HI"/);
    const taskId = /submitted (\S+)/.exec(submit.out)![1]!;

    const tasks = await dsat(['tasks', '--state', 'succeeded', '--json'], env);
    expect(JSON.parse(tasks.out).tasks.map((t: { taskId: string }) => t.taskId)).toContain(taskId);
    const get = await dsat(['get', taskId, '--history'], env);
    expect(get.out).toMatch(/state\s+SUCCEEDED/);
    expect(get.out).toMatch(/STAGE_DONE/);

    // Spans reach the store when each process's batch processor flushes; poll for all six.
    let trace = '';
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      trace = (await dsat(['trace', taskId], env)).out;
      if ((trace.match(/dsat\.(dispatch|process) /g) ?? []).length >= 6) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(trace).toContain('dsat.submit');
    for (const stage of ['parse', 'hash', 'upper']) {
      expect(trace).toContain(`dsat.dispatch ${stage}`);
      expect(trace).toContain(`dsat.process ${stage}`);
    }
  });

  it('cancels, refuses a bad pipeline file naming the stage, lists dead letters and the mesh', async () => {
    const pipeline = path.join(tmp.path, 'slow.yaml');
    fs.writeFileSync(pipeline, 'name: nobody\nstages:\n  - name: wait\n    next: []\n');
    expect((await dsat(['pipelines', 'apply', pipeline], env)).code).toBe(0);
    // No worker serves "wait": the task stays queued until it is cancelled.
    const submitted = await dsat(['submit', 'nobody', '{}'], env);
    const taskId = /submitted (\S+)/.exec(submitted.out)![1]!;
    const cancel = await dsat(['cancel', taskId], env);
    expect(cancel.code).toBe(0);
    expect(cancel.out).toContain('CANCELLED');

    const bad = path.join(tmp.path, 'bad.yaml');
    fs.writeFileSync(
      bad,
      'name: bad\nstages:\n  - name: a\n    next: [b]\n  - name: b\n    next: [ghost]\n',
    );
    const applied = await dsat(['pipelines', 'apply', bad], env);
    expect(applied.code).not.toBe(0);
    expect(applied.err).toMatch(/ghost/);
    expect(applied.err.split('\n').filter((l) => l.startsWith('dsat:'))).toHaveLength(1);

    const dead = await dsat(['dead-letters', 'list', '--json'], env);
    expect(dead.code).toBe(0);
    expect(JSON.parse(dead.out).tasks).toEqual([]);
    // A person reading an empty list gets words, not an empty frame.
    expect((await dsat(['dead-letters', 'list'], env)).out.trim()).toBe('no dead-lettered tasks');
    expect((await dsat(['tasks', '--state', 'DEAD_LETTERED'], env)).out.trim()).toBe(
      'no tasks match',
    );
    const mesh = await dsat(['mesh', '--json'], env);
    expect(mesh.code).toBe(0);
    const m = JSON.parse(mesh.out) as {
      members: { kind: string }[];
      stages: { stage: string; advice?: { action: string } }[];
    };
    expect(new Set(m.members.map((x) => x.kind))).toEqual(new Set(['router', 'worker']));
    expect(m.stages.map((s) => s.stage)).toEqual(
      expect.arrayContaining(['parse', 'hash', 'upper']),
    );
    for (const s of m.stages) expect(s.advice?.action).toMatch(/^[A-Z_]+$/);

    const missing = await dsat(['get', '00000000-0000-4000-8000-000000000000'], env);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^dsat: NOT_FOUND/);
  });

  it("runs the pipeline3 benchmark on a tiny workload and prints the peers' JSON shape", async () => {
    const bench = await dsat(
      [
        'bench',
        '--workload',
        'pipeline3',
        '--tasks',
        '500',
        '--warmup',
        '100',
        '--runs',
        '1',
        '--modes',
        'T',
        '--json',
        '--runs-file',
        path.join(tmp.path, 'plain-runs.jsonl'),
      ],
      {},
    );
    expect(bench.code).toBe(0);
    const summary = JSON.parse(bench.out.split('\n')[0]!);
    expect(summary).toMatchObject({
      type: 'summary',
      system: 'dsat',
      measurement: 'T',
      lost_total: 0,
      dups_total: 0,
    });
    expect(summary.tasks_per_s.median).toBeGreaterThan(0);
    expect(summary.cpu_ms_per_task.median).toBeGreaterThan(0);
    // Each process's CPU in the measured window, and the kernel's part of it.
    const run = JSON.parse(fs.readFileSync(path.join(tmp.path, 'plain-runs.jsonl'), 'utf8'));
    for (const name of ['status', 'tracker', 'router', 'stage1', 'stage2', 'stage3', 'client']) {
      const p = run.procs[name] as { cpu_measure_s: number; cpu_system_measure_s: number };
      expect(p.cpu_system_measure_s).toBeGreaterThanOrEqual(0);
      expect(p.cpu_system_measure_s).toBeLessThanOrEqual(p.cpu_measure_s);
    }
    expect(run.procs.status.cpu_measure_s).toBeGreaterThan(0);
  });

  it('measures L at each rate of a --rate list, every task back once', async () => {
    const bench = await dsat(
      [
        'bench',
        '--modes',
        'L',
        '--rate',
        '20,40',
        '--duration',
        '1',
        '--warmup',
        '10',
        '--runs',
        '1',
        '--json',
      ],
      {},
      120_000,
    );
    expect(bench.code).toBe(0);
    const lines = jsonLines<Record<string, unknown>>(bench.out);
    expect(lines).toEqual([
      expect.objectContaining({ measurement: 'L', offered_rate: 20, lost_total: 0, dups_total: 0 }),
      expect.objectContaining({ measurement: 'L', offered_rate: 40, lost_total: 0, dups_total: 0 }),
    ]);
    for (const l of lines) expect((l.p99_ms as { median: number }).median).toBeGreaterThan(0);
    expect(bench.err).toMatch(/run 1\/1 L at 20\/s: .*\n.*run 1\/1 L at 40\/s: /);
  });

  it('measures what tracing costs, untraced and traced runs in pairs, every span received', async () => {
    const runsFile = path.join(tmp.path, 'runs.jsonl');
    const bench = await dsat(
      [
        'bench',
        '--tasks',
        '300',
        '--warmup',
        '50',
        '--runs',
        '1',
        '--modes',
        'T',
        '--tracing',
        'both',
        '--runs-file',
        runsFile,
        '--json',
      ],
      {},
      150_000,
    );
    expect(bench.code).toBe(0);
    const lines = jsonLines<Record<string, unknown>>(bench.out);
    expect(lines.map((l) => [l.type, l.system])).toEqual([
      ['summary', 'dsat'],
      ['summary', 'dsat-traced'],
      ['tracing_cost', 'dsat'],
    ]);
    expect(lines[2]).toMatchObject({
      measurement: 'T',
      pairs: 1,
      throughput_drop_pct: { median: expect.any(Number), runs: 1 },
      cpu_ms_per_task_added: { median: expect.any(Number), runs: 1 },
    });
    const runs = jsonLines<Record<string, number | string>>(fs.readFileSync(runsFile, 'utf8'));
    const traced = runs.find((r) => r.system === 'dsat-traced')!;
    // Seven spans a task (submit, then dispatch and process at each of three stages), warm-up
    // tasks included, each task its own trace.
    expect(traced.spans_received).toBeGreaterThanOrEqual(7 * 350);
    expect(traced.traces_received).toBeGreaterThanOrEqual(350);
  }, 180_000);

  it('watches the feed with only the fields asked for', async () => {
    const submit = await dsat(['submit', 'demo', '{"text":"fields"}', '--follow'], env);
    expect(submit.code).toBe(0);
    const taskId = /submitted (\S+)/.exec(submit.out)![1]!;
    // From revision 1, so that the task's transitions are there however late the watch starts.
    const watch = spawnDsat(
      ['watch', '--json', '--from-revision', '1', '--pipeline', 'demo'].concat([
        '--fields',
        'task_id,to_state',
        '--fields',
        'stage',
      ]),
      env,
    );
    try {
      await watch.waitForLine(new RegExp(`"taskId":"${taskId}".*"TASK_STATE_SUCCEEDED"`), 30_000);
    } finally {
      watch.kill('SIGKILL');
    }
    const lines = watch.stdout.map((l) => JSON.parse(l) as Record<string, string>);
    for (const line of lines)
      expect(['taskId', 'toState', 'stage']).toEqual(expect.arrayContaining(Object.keys(line)));
    const mine = lines.filter((l) => l.taskId === taskId);
    expect(mine.filter((l) => l.toState === 'TASK_STATE_RUNNING').map((l) => l.stage)).toEqual([
      'parse',
      'hash',
      'upper',
    ]);
    expect(mine[mine.length - 1]).toEqual({
      taskId,
      toState: 'TASK_STATE_SUCCEEDED',
      stage: 'upper',
    });
  });

  it('exits 3 when a followed task fails, and 2 naming the flag for a bad number', async () => {
    const failed = await dsat(['submit', 'demo', '{"nope":1}', '--follow'], env);
    expect(failed.code).toBe(3);
    expect(failed.out).toMatch(/^FAILED: INVALID_JSON/m);
    const unreadable = await dsat(['submit', 'demo', `@${tmp.path}/absent.json`], env);
    expect(unreadable.code).toBe(1);
    expect(unreadable.err).toMatch(
      /^dsat: cannot read the payload file .*absent\.json: no such file$/m,
    );
    // A failed task is not dead-lettered: a redrive naming it says so and exits 1.
    const failedId = /^submitted (\S+)/m.exec(failed.out)?.[1] ?? 'none';
    const redrive = await dsat(['dead-letters', 'redrive', failedId], env);
    expect(redrive.code).toBe(1);
    expect(redrive.out).toMatch(/^redriven 0 task\(s\)$/m);
    expect(redrive.err).toContain(`not redriven, not dead-lettered`);
    expect(redrive.err).toContain(failedId);

    const cases: [string[], RegExp][] = [
      [['tasks', '--limit', 'x'], /option '--limit <n>' argument 'x' is invalid/],
      [['submit', 'demo', '{}', '--priority', '1.5'], /option '--priority <n>' argument '1.5'/],
      [['watch', '--from-revision', '-1'], /option '--from-revision <n>' argument '-1'/],
      [['watch', '--fields', 'task_id,taskid'], /"taskid" is not a Transition field/],
      [['watch', '--fields', 'error.message'], /"error\.message" names a field inside a field/],
      [['mesh', '--watch', '--interval', '5'], /option '--interval <ms>' argument '5'/],
      [['dead-letters', 'list', '--limit', '0'], /option '--limit <n>' argument '0'/],
      [['pipelines', 'get', 'demo', 'latest'], /value 'latest' is invalid for argument 'version'/],
      [['tasks', '--no-such-flag'], /unknown option '--no-such-flag'/],
      [['tasks', '--state', 'bogus'], /option '--state <state\.\.\.>' argument 'bogus' is invalid/],
      [['dead-letters', 'redrive'], /name task ids, --pipeline or --stage/],
      [['dead-letters', 'purge'], /name task ids or --pipeline/],
      [['worker', '--stages', 'a', '--port', '0'], /--handler \(DSAT_HANDLER\): is required/],
    ];
    await expectUsageErrors(cases, env);
    // The version of `pipelines get` is an argument: --version is dsat's own flag.
    const v1 = await dsat(['pipelines', 'get', 'demo', '1', '--json'], env);
    expect(v1.code).toBe(0);
    expect(JSON.parse(v1.out)).toMatchObject({ name: 'demo', version: 1 });
  });

  it('prints output larger than a pipe holds whole, and names what it could not purge', async () => {
    const big = path.join(tmp.path, 'big.json');
    fs.writeFileSync(big, JSON.stringify({ text: 'x'.repeat(300_000) }));
    const run = await dsat(['submit', 'demo', `@${big}`, '--follow', '--json'], env);
    expect(run.code).toBe(0);
    const taskId = (JSON.parse(run.out.split('\n')[0]!) as { taskId: string }).taskId;
    const get = await dsat(['get', taskId, '--json'], env);
    expect(get.out.length).toBeGreaterThan(3 * 65_536);
    expect(JSON.parse(get.out)).toMatchObject({ taskId, state: 'SUCCEEDED' });

    const huge = path.join(tmp.path, 'huge.txt');
    fs.writeFileSync(huge, 'a'.repeat(5_000_000));
    const tooBig = await dsat(['submit', 'demo', `@${huge}`], env);
    expect(tooBig.code).toBe(1);
    expect(tooBig.err).toMatch(/^dsat: payload: 5000000 bytes is more than one gRPC message/m);

    const unknown = '00000000-0000-4000-8000-000000000000';
    const purge = await dsat(['dead-letters', 'purge', unknown], env);
    expect(purge.code).toBe(1);
    expect(purge.out).toMatch(/^purged 0 task\(s\)$/m);
    expect(purge.err).toContain(`not purged, no such task: ${unknown}`);
  });

  it('says what is wrong with the span receiver instead of waiting or failing obscurely', async () => {
    const run = await dsat(['submit', 'demo', '{"text":"t"}', '--follow'], env);
    const taskId = /^submitted (\S+)/m.exec(run.out)![1]!;
    const wrong = await dsat(['trace', taskId, '--traces', `${env.DSAT_TRACES_URL}/wrong`], env);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/^dsat: the span receiver at .*\/wrong answered 404/m);
    // A receiver that takes the connection and never answers: the call deadline ends the wait.
    const silentServer = net.createServer(() => undefined);
    await new Promise<void>((r) => silentServer.listen(0, '127.0.0.1', r));
    const { port } = silentServer.address() as net.AddressInfo;
    try {
      const mute = await dsat(
        ['trace', taskId, '--traces', `http://127.0.0.1:${port}`, '--timeout', '1s'],
        env,
        30_000,
      );
      expect(mute.code).toBe(1);
      expect(mute.err).toMatch(/cannot reach the span receiver .*no answer within 1000 ms/);
    } finally {
      silentServer.close();
    }
  });

  it('follows a fan-out: the task and its branch to their ends, and get lists the branch', async () => {
    const forked = path.join(tmp.path, 'forked.yaml');
    fs.writeFileSync(
      forked,
      'name: forked\nstages:\n  - name: a\n    next: [b, c]\n  - name: b\n  - name: c\n',
    );
    expect((await dsat(['pipelines', 'apply', forked], env)).code).toBe(0);
    expect((await dsat(['pipelines', 'list'], env)).out).toMatch(/forked .* a → \{b, c\}/);
    const handlers = path.join(tmp.path, 'forked-handlers.js');
    fs.writeFileSync(
      handlers,
      ['a', 'b', 'c'].map((s) => `exports.${s} = async (x) => ({ ...x, ${s}: true });\n`).join(''),
    );
    const worker = spawnDsat(
      [
        'worker',
        '--stages',
        'a,b,c',
        '--handler',
        handlers,
        '--routers',
        env.DSAT_ROUTER_ADDRESS!,
        '--tracker-address',
        env.DSAT_TRACKER_ADDRESS!,
      ],
      env,
    );
    try {
      const run = await dsat(['submit', 'forked', '{"n":1}', '--follow'], env);
      expect(run.code).toBe(0);
      const taskId = /^submitted (\S+)/m.exec(run.out)![1]!;
      const branchId = `${taskId}.5.c`; // seq 5: the move from a to b
      expect(run.out).toMatch(/^SUCCEEDED: \{"n":1,"a":true,"b":true\}$/m);
      expect(run.out).toContain(`[branch ${branchId}]`);
      expect(run.out).toContain(`branch ${branchId}: SUCCEEDED: {"n":1,"a":true,"c":true}`);
      const get = await dsat(['get', taskId], env);
      expect(get.out).toMatch(
        new RegExp(`^branch\\s+${branchId.replace(/\./g, '\\.')}  SUCCEEDED at c`, 'm'),
      );
      const branch = await dsat(['get', branchId, '--json'], env);
      expect(JSON.parse(branch.out)).toMatchObject({ parentTaskId: taskId, state: 'SUCCEEDED' });
      // Nothing of the task is live any more: a cancel says so.
      const cancel = await dsat(['cancel', taskId], env);
      expect(cancel.code).toBe(1);
      expect(cancel.err).toMatch(/FAILED_PRECONDITION.*already ended SUCCEEDED/);
    } finally {
      worker.kill('SIGTERM');
      await within(worker.exited, 15_000, 'the forked worker to stop');
    }
  });

  it('loads a pipeline of the running mesh and reports each stage (bench --pipeline)', async () => {
    const bench = await dsat(
      [
        'bench',
        '--pipeline',
        'demo',
        '--payload',
        '{"text":"hi"}',
        '--tasks',
        '40',
        '--window',
        '8',
        '--json',
      ],
      env,
    );
    expect(bench.code).toBe(0);
    const r = JSON.parse(bench.out) as {
      succeeded: number;
      failed: number;
      lost: number;
      tasks_per_s: number;
      end_to_end_ms: { p50: number; p99: number };
      stages: {
        stage: string;
        tasks: number;
        attempts: number;
        queue_ms: { p50: number };
        run_ms: { p50: number };
      }[];
    };
    expect([r.succeeded, r.failed, r.lost]).toEqual([40, 0, 0]);
    expect(r.tasks_per_s).toBeGreaterThan(0);
    expect(r.end_to_end_ms.p99).toBeGreaterThanOrEqual(r.end_to_end_ms.p50);
    expect(r.stages.map((s) => s.stage)).toEqual(['parse', 'hash', 'upper']);
    for (const s of r.stages) {
      expect(s.tasks).toBe(40);
      expect(s.attempts).toBeGreaterThanOrEqual(40);
      expect(s.queue_ms.p50).toBeGreaterThanOrEqual(0);
      expect(s.run_ms.p50).toBeGreaterThanOrEqual(0);
    }

    // A pipeline file is applied first; with no worker for its stage, the bench gives up and says why.
    const file = path.join(tmp.path, 'unserved.yaml');
    fs.writeFileSync(file, 'name: unserved\nstages:\n  - name: idle\n    next: []\n');
    const stalled = await dsat(
      ['bench', '--pipeline', file, '--tasks', '3', '--stall-timeout', '2'],
      env,
    );
    expect(stalled.code).toBe(1);
    expect(stalled.out).toMatch(/0 succeeded, 0 failed, 3 lost/);
    expect(stalled.err).toMatch(/applied unserved v1/);
    expect(stalled.err).toMatch(/^dsat: no task ended for 2 s, 3 of 3 had not ended/m);

    const mixed = await dsat(['bench', '--pipeline', 'demo', '--modes', 'L'], env);
    expect(mixed.code).toBe(2);
    expect(mixed.err).toMatch(/--modes applies to the built-in workload only/);
  });
});

describe('dsat bench --pipeline FILE --embedded', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());
  const demo = path.join(__dirname, '../../deploy/k8s/pipelines/demo.yaml');
  const noMesh: NodeJS.ProcessEnv = {};

  it('runs a file on a mesh of its own with the handlers of --handler, or synthetic ones', async () => {
    const real = await dsat(
      [
        'bench',
        '--pipeline',
        demo,
        '--embedded',
        '--handler',
        path.join(__dirname, '../../deploy/demo-handlers.js'),
        '--payload',
        '{"text":"hi"}',
        '--tasks',
        '30',
        '--window',
        '5',
        '--json',
      ],
      noMesh,
    );
    expect(real.code).toBe(0);
    const r = JSON.parse(real.out) as {
      succeeded: number;
      lost: number;
      stages: { stage: string; tasks: number }[];
    };
    expect([r.succeeded, r.lost]).toEqual([30, 0]);
    expect(r.stages.map((s) => [s.stage, s.tasks])).toEqual([
      ['parse', 30],
      ['hash', 30],
      ['upper', 30],
    ]);

    // A fan-out: a task ends when its branch (a task of its own) has ended too.
    const file = path.join(tmp.path, 'fork.yaml');
    fs.writeFileSync(
      file,
      'name: fork\nstages:\n  - name: first\n    next: [second, third]\n  - name: second\n  - name: third\n',
    );
    const synthetic = await dsat(
      ['bench', '--pipeline', file, '--embedded', '--stage-ms', '20', '--tasks', '20', '--no-sync'],
      noMesh,
    );
    expect(synthetic.code).toBe(0);
    expect(synthetic.err).toMatch(/embedded mesh \(sync off, .*synthetic, 20 ms per attempt/);
    expect(synthetic.out).toMatch(/20 succeeded, 0 failed, 0 lost/);
    // Each stage's running time includes the synthetic attempt's 20 ms.
    for (const stage of ['first', 'second', 'third']) {
      const row = synthetic.out.split('\n').find((l) => l.includes(` ${stage} `));
      const runP50 = Number(/│\s*(\d+(?:\.\d+)?) \/ \S+\s*│\s*$/.exec(row ?? '')?.[1]);
      expect(runP50).toBeGreaterThanOrEqual(10);
    }
  });

  it('says what is wrong with its flags and handlers', async () => {
    const file = path.join(tmp.path, 'one.yaml');
    fs.writeFileSync(file, 'name: one\nstages:\n  - name: only\n    next: []\n');
    const cases: [string[], RegExp][] = [
      [['--embedded'], /--embedded applies to --pipeline FILE only/],
      [['--pipeline', 'demo', '--embedded'], /--embedded runs a pipeline file; "demo" is not one/],
      [['--pipeline', file, '--stage-ms', '5'], /--stage-ms applies to --embedded only/],
      [
        ['--pipeline', file, '--no-sync'],
        /--no-sync applies to --embedded only, not to a running mesh/,
      ],
      [
        ['--router', '127.0.0.1:1', '--pipeline', file, '--embedded'],
        /--router applies to a running mesh, not with --embedded/,
      ],
      [['--pipeline', file, '--embedded', '--stage-ms', 'x'], /--stage-ms must be a whole number/],
      [
        ['--modes', 'L', '--rate', '50,fast'],
        /--rate must be a whole number of at least 1, not "fast"/,
      ],
    ];
    await expectUsageErrors(
      cases.map(([args, message]) => [['bench', ...args], message]),
      noMesh,
    );
    const handlers = path.join(tmp.path, 'handlers.js');
    fs.writeFileSync(handlers, 'exports.other = async (x) => x;\n');
    const missing = await dsat(
      ['bench', '--pipeline', file, '--embedded', '--handler', handlers],
      noMesh,
    );
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^dsat: .*handlers\.js exports no handler for stage only$/m);
  });
});

describe('dsat submit --follow, when the mesh stops first', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('exits 1 with a line saying so, not 0 as if the task had ended', async () => {
    const up = spawnDsat(['up', '--data-dir', path.join(tmp.path, 'data'), ...UP_FREE_PORTS]);
    try {
      await up.waitForLine(/^dsat is up/, 60_000);
      const env = {
        DSAT_ROUTER_ADDRESS: upAddress(up, 'router'),
        DSAT_STATUS_ADDRESS: upAddress(up, 'status'),
      };
      expect(up.stdout.join('\n')).toContain(
        `export DSAT_ROUTER_ADDRESS=${env.DSAT_ROUTER_ADDRESS}`,
      );
      // parse runs 3 s; the stop lets it finish, and the task is left queued at hash.
      const follow = spawnDsat(
        ['submit', 'demo', JSON.stringify({ text: 'slow', workMs: 3_000 }), '--follow'],
        env,
      );
      await follow.waitForLine(/RUNNING\s+parse/, 30_000);
      up.kill('SIGINT');
      expect(await within(follow.exited, 60_000, 'the follow to end')).toBe(1);
      expect(follow.stdout.join('\n')).not.toMatch(/SUCCEEDED/);
      expect(follow.stderr.join('\n')).toMatch(/^dsat: /m);
    } finally {
      up.kill('SIGINT');
      await within(up.exited, 60_000, 'dsat up to stop');
    }
  });
});
