import fs from 'node:fs';
import { SERVICE_ENV, nodeFlagsOf } from '../../cli/node-flags';
import { healthCheck } from '../helpers/plain-grpc';
import type { RunningProcess } from '../helpers/processes';
import { spawnDsat, UP_FREE_PORTS, upAddress, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

const NAMES = ['status', 'tracker', 'router', 'worker'] as const;
type Name = (typeof NAMES)[number];
function upProcesses(dataDir: string): RunningProcess {
  return spawnDsat(['up', '--processes', '--data-dir', dataDir, ...UP_FREE_PORTS]);
}

/** Each service's address and pid, from the lines `  router   127.0.0.1:7402  (pid 1234)`. */
function children(up: RunningProcess): Record<Name, { address: string; pid: number }> {
  const out = {} as Record<Name, { address: string; pid: number }>;
  for (const name of NAMES) {
    const line = up.stdout.find((l) => l.trim().startsWith(name + ' '));
    const m = /^\s*\S+\s+(\S+)\s+\(pid (\d+)\)$/.exec(line ?? '');
    if (!m) throw new Error(`no address and pid for ${name} in:\n${up.stdout.join('\n')}`);
    out[name] = { address: m[1]!, pid: Number(m[2]) };
  }
  return out;
}

/** The parent pid of a live process, or undefined once it is gone (a zombie counts as gone). */
function parentOf(pid: number): number | undefined {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
  try {
    // "pid (comm) state ppid ...": comm may hold spaces, so read after its closing paren.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return state === 'Z' ? undefined : Number(ppid);
  } catch {
    return undefined; // exited between the two looks
  }
}

async function allGone(pids: number[], ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (pids.some((p) => parentOf(p) !== undefined)) {
    if (Date.now() > end) {
      const left = pids.filter((p) => parentOf(p) !== undefined);
      throw new Error(`${what}: pids ${left.join(', ')} still alive after ${ms} ms`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What a `dsat` client command needs to reach the children. */
function clientEnv(kids: Record<Name, { address: string }>): NodeJS.ProcessEnv {
  return {
    DSAT_ROUTER_ADDRESS: kids.router.address,
    DSAT_STATUS_ADDRESS: kids.status.address,
    DSAT_TRACKER_ADDRESS: kids.tracker.address,
  };
}

/** Kills, after a test, any of these children still alive. */
function killLeft(pids: Iterable<number>): void {
  for (const pid of pids) if (parentOf(pid) !== undefined) process.kill(pid, 'SIGKILL');
}

/** Runs one `dsat` client command to its end. */
async function dsat(args: string[], env: NodeJS.ProcessEnv) {
  const p = spawnDsat(args, env);
  const code = await within(p.exited, 60_000, `dsat ${args.join(' ')}`);
  return { code, out: p.stdout.join('\n'), err: p.stderr.join('\n') };
}

async function demoTaskSucceeds(env: NodeJS.ProcessEnv, text: string): Promise<string> {
  const submit = await dsat(['submit', 'demo', JSON.stringify({ text }), '--follow'], env);
  expect(submit.code).toBe(0);
  expect(submit.out).toContain(`SUCCEEDED: {"text":"${text.toUpperCase()}"`);
  return /submitted (\S+)/.exec(submit.out)![1]!;
}

describe('dsat up --processes', () => {
  const data = tempDir();
  let up: RunningProcess;
  let first: Record<Name, { address: string; pid: number }>;
  let env: NodeJS.ProcessEnv;
  const pids = new Set<number>();

  beforeAll(async () => {
    up = upProcesses(data.path);
    await up.waitForLine(/^dsat is up/, 90_000);
    first = children(up);
    for (const c of Object.values(first)) pids.add(c.pid);
    env = {
      ...clientEnv(first),
      DSAT_TRACES_URL: upAddress(up, 'traces'),
    };
  });
  afterAll(() => {
    up.kill('SIGKILL');
    killLeft(pids);
    data.cleanup();
  });

  it('runs each service as its own child process, serving; a demo task succeeds and its trace spans the children', async () => {
    const parent = up.child.pid!;
    expect(pids.size).toBe(4);
    expect(pids.has(parent)).toBe(false);
    for (const name of NAMES) {
      expect(parentOf(first[name].pid)).toBe(parent);
      expect(first[name].address).toMatch(/^127\.0\.0\.1:\d+$/);
      await expect(healthCheck(first[name].address)).resolves.toBe('SERVING');
      // Started with dsat's node flags (cli/node-flags.ts).
      const argv = fs.readFileSync(`/proc/${first[name].pid}/cmdline`, 'utf8').split('\0');
      expect(argv).toEqual(expect.arrayContaining(nodeFlagsOf(name)));
      // ... and its environment (a value the user set wins).
      const environ = fs.readFileSync(`/proc/${first[name].pid}/environ`, 'utf8').split('\0');
      for (const [key, value] of Object.entries(SERVICE_ENV)) {
        expect(environ).toContain(`${key}=${process.env[key] ?? value}`);
      }
    }

    const taskId = await demoTaskSucceeds(env, 'hi');
    // The children export spans to the receiver in the parent, each in its own batches: poll until
    // the router's three dispatch spans and the worker's three process spans are all in.
    let trace = '';
    const until = Date.now() + 30_000;
    while (Date.now() < until && (trace.match(/dsat\.(dispatch|process) /g) ?? []).length < 6) {
      await new Promise((r) => setTimeout(r, 500));
      trace = (await dsat(['trace', taskId], env)).out;
    }
    for (const stage of ['parse', 'hash', 'upper']) {
      expect(trace).toMatch(new RegExp(`dsat\\.dispatch ${stage}\\s+dsat-router`));
      expect(trace).toMatch(new RegExp(`dsat\\.process ${stage}\\s+dsat-worker`));
    }
  });

  it('restarts a router killed with -9 on the same port, and a new task succeeds', async () => {
    process.kill(first.router.pid, 'SIGKILL');
    const died = await up.waitForLine(
      /^dsat: router \(pid (\d+)\) was killed by SIGKILL/,
      20_000,
      'stderr',
    );
    expect(Number(died[1])).toBe(first.router.pid);
    const back = await up.waitForLine(
      /^dsat: router is back on (\S+) \(pid (\d+)\)$/,
      30_000,
      'stderr',
    );
    expect(back[1]).toBe(first.router.address);
    const pid = Number(back[2]);
    pids.add(pid);
    expect(pid).not.toBe(first.router.pid);
    expect(parentOf(pid)).toBe(up.child.pid);
    await expect(healthCheck(back[1]!)).resolves.toBe('SERVING');
    await demoTaskSucceeds(env, 'again');
  });

  it('stops every child on SIGINT and exits 0', async () => {
    up.kill('SIGINT');
    expect(await within(up.exited, 20_000, 'dsat up --processes to stop on SIGINT')).toBe(0);
    await allGone([...pids], 2_000, 'children after the parent exited');
    // The person who pressed Ctrl-C is told it is stopping, and that it stopped.
    expect(up.stdout.slice(-2)).toEqual([
      expect.stringMatching(/^dsat is stopping: running tasks finish/),
      `dsat stopped; the data stays in ${data.path}`,
    ]);
  });
});

describe('dsat up --processes, stopped while its worker runs a long task', () => {
  const data = tempDir();
  const pids: number[] = [];
  afterAll(() => {
    killLeft(pids);
    data.cleanup();
  });

  async function start() {
    const up = upProcesses(data.path);
    await up.waitForLine(/^dsat is up/, 90_000);
    const kids = children(up);
    pids.push(...Object.values(kids).map((c) => c.pid));
    return { up, env: clientEnv(kids) };
  }

  it('lets the worker drain it, past the 10 s other children get, so it succeeds on its first attempt', async () => {
    const first = await start();
    const submitted = await dsat(
      ['submit', 'demo', JSON.stringify({ text: 'slow', workMs: 13_000 }), '--json'],
      first.env,
    );
    expect(submitted.code).toBe(0);
    const taskId = (JSON.parse(submitted.out) as { taskId: string }).taskId;
    const until = Date.now() + 30_000;
    for (;;) {
      const got = JSON.parse((await dsat(['get', taskId, '--json'], first.env)).out) as {
        state: string;
        stage: string;
      };
      if (got.state === 'RUNNING' && got.stage === 'parse') break;
      if (Date.now() > until) throw new Error(`task never ran at parse: ${JSON.stringify(got)}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    first.up.kill('SIGINT');
    expect(await within(first.up.exited, 60_000, 'dsat up --processes to stop')).toBe(0);
    expect(first.up.stderr.join('\n')).not.toMatch(/did not stop within|killed by SIGKILL/);

    const second = await start();
    try {
      const got = JSON.parse(
        (await dsat(['get', taskId, '--history', '--json'], second.env)).out,
      ) as {
        task: { state: string };
        history: { stage: string; attempt: number; reason: string }[];
      };
      expect(got.task.state).toBe('SUCCEEDED');
      expect(got.history.filter((t) => t.attempt !== 1)).toEqual([]);
    } finally {
      second.up.kill('SIGINT');
      await within(second.up.exited, 60_000, 'the second dsat up to stop');
    }
  });
});

describe('dsat up --processes, its parent killed with -9', () => {
  const data = tempDir();
  let pids: number[] = [];
  afterAll(() => {
    killLeft(pids);
    data.cleanup();
  });

  it('leaves no orphan: every child exits by itself', async () => {
    const up = upProcesses(data.path);
    try {
      await up.waitForLine(/^dsat is up/, 90_000);
      pids = Object.values(children(up)).map((c) => c.pid);
    } finally {
      up.kill('SIGKILL');
    }
    await up.exited;
    await allGone(pids, 15_000, 'children of a parent killed with -9');
  });
});
