import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

export const REPO_ROOT = path.join(__dirname, '../..');
export const DSAT_BIN = path.join(REPO_ROOT, 'bin/dsat.js');

type Stream = 'stdout' | 'stderr';

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly stdout: string[];
  readonly stderr: string[];
  /** Resolves with the first line of `stream` (stdout by default) matching `re`, or rejects after
   * `timeoutMs` or when the process exits. */
  waitForLine(re: RegExp, timeoutMs?: number, stream?: Stream): Promise<RegExpMatchArray>;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

/** Spawns `dsat ARGS...` as a real child process. */
export function spawnDsat(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
): RunningProcess {
  return spawnProcess(process.execPath, [...nodeArgs, DSAT_BIN, ...args], env);
}

/** `dsat up` flags that bind every server and the span receiver to a free port. */
export const UP_FREE_PORTS = [
  '--status-port',
  '0',
  '--router-port',
  '0',
  '--tracker-port',
  '0',
  '--worker-port',
  '0',
  '--trace-receiver-port',
  '0',
];

/** The address `dsat up` printed for `name` (`status`, `router`, …, `traces`). */
export function upAddress(up: RunningProcess, name: string): string {
  const line = up.stdout.find((l) => l.trim().startsWith(name + ' '));
  const address = line?.trim().split(/\s+/)[1];
  if (address === undefined) throw new Error(`no ${name} line in:\n${up.stdout.join('\n')}`);
  return address;
}

/** `dsat up` on free ports with its store in `dataDir`, once it says it is up, and its client env. */
export async function startDsatUp(
  dataDir: string,
  flags: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<{ up: RunningProcess; env: NodeJS.ProcessEnv }> {
  const up = spawnDsat(['up', '--data-dir', dataDir, ...flags, ...UP_FREE_PORTS], env);
  await up.waitForLine(/^dsat is up/, 60_000);
  return { up, env: upClientEnv(up) };
}

/** Stops a `dsat up` as Ctrl-C does, and waits for it. */
export async function stopDsatUp(up: RunningProcess): Promise<void> {
  up.kill('SIGINT');
  await within(up.exited, 15_000, 'dsat up to stop');
}

/** Where `dsat` client commands find the mesh a `dsat up` started (and its span receiver, if any). */
export function upClientEnv(up: RunningProcess): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    DSAT_ROUTER_ADDRESS: upAddress(up, 'router'),
    DSAT_STATUS_ADDRESS: upAddress(up, 'status'),
    DSAT_TRACKER_ADDRESS: upAddress(up, 'tracker'),
  };
  if (up.stdout.some((l) => l.trim().startsWith('traces '))) {
    env.DSAT_TRACES_URL = upAddress(up, 'traces');
  }
  return env;
}

/**
 * The environment that shifts a process's wall clock by `offset` ("+30s", "-30s") with libfaketime
 * (Debian package faketime), leaving its monotonic clock alone. Preloaded into node itself rather
 * than run through the `faketime` command, which forks: a signal to it would miss node.
 */
export function faketimeEnv(offset: string): NodeJS.ProcessEnv {
  const lib = fs
    .readdirSync('/usr/lib')
    .map((d) => path.join('/usr/lib', d, 'faketime/libfaketime.so.1'))
    .find((f) => fs.existsSync(f));
  if (lib === undefined) {
    throw new Error('libfaketime is not installed (bash scripts/test-setup.sh faketime)');
  }
  return { LD_PRELOAD: lib, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

/** Spawns any program as a real child process in the repository root. */
export function spawnProcess(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): RunningProcess {
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: { re: RegExp; stream: Stream; resolve: (m: RegExpMatchArray) => void }[] = [];
  const onLine = (stream: Stream, lines: string[]) => (line: string) => {
    lines.push(line);
    for (const w of [...waiters]) {
      const m = w.stream === stream ? line.match(w.re) : null;
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  readline.createInterface({ input: child.stdout! }).on('line', onLine('stdout', stdout));
  readline.createInterface({ input: child.stderr! }).on('line', onLine('stderr', stderr));
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  return {
    child,
    stdout,
    stderr,
    exited,
    kill: (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitForLine(re, timeoutMs = 20_000, stream = 'stdout') {
      const seen = (stream === 'stdout' ? stdout : stderr).map((l) => l.match(re)).find((m) => m);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new Error(
              `no line matching ${re} within ${timeoutMs} ms\nstdout:\n${stdout.join('\n')}\nstderr:\n${stderr.slice(-20).join('\n')}`,
            ),
          );
        }, timeoutMs);
        const done = (m: RegExpMatchArray) => {
          clearTimeout(timer);
          resolve(m);
        };
        waiters.push({ re, stream, resolve: done });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(
            new Error(
              `process exited (${code}) before a line matched ${re}\nstderr:\n${stderr.join('\n')}`,
            ),
          );
        });
      });
    },
  };
}

/** Resolves with `value` after the process exits or rejects once `ms` pass. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
