import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { serviceEnv, serviceNodeFlags } from './node-flags';

/** Restart delays after a crash: doubling from the first to the cap. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5_000;
/** A child that dies sooner than this after its start crashed "quickly". */
const QUICK_CRASH_MS = 10_000;
/** This many quick crashes in a row: the child cannot run here, so stop trying. */
const MAX_QUICK_CRASHES = 5;
/** How long a child may take to stop after SIGTERM before it is killed, unless its spec says. */
export const STOP_GRACE_MS = 10_000;

export interface ChildSpec {
  /** The service name: it prefixes the child's log lines and names it in messages. */
  readonly name: string;
  /** `dsat` arguments without `--port`, which the supervisor adds. */
  readonly args: readonly string[];
  /** The port asked for; 0 picks one at the first start, which every restart then reuses. */
  readonly port: number;
  /** The Prometheus metrics port (`--metrics-port`), reused like `port`; undefined serves none. */
  readonly metricsPort?: number;
  readonly env?: NodeJS.ProcessEnv;
  /** How long it may take to stop after SIGTERM before it is killed (a worker drains first). */
  readonly stopGraceMs?: number;
}

export interface StartedChild {
  readonly name: string;
  readonly address: string;
  readonly pid: number;
  /** Where Prometheus scrapes it, when it serves metrics. */
  readonly metricsUrl?: string;
}

export interface SupervisorEvents {
  /** One line for people: a child died, came back or would not stop. */
  notice(line: string): void;
  /** A child crashed MAX_QUICK_CRASHES times in a row; the caller stops everything. */
  giveUp(err: Error): void;
}

interface Supervised {
  readonly spec: ChildSpec;
  port: number;
  metricsPort: number | undefined;
  proc?: ChildProcess;
  startedAt: number;
  quickCrashes: number;
  restart?: NodeJS.Timeout;
}

/**
 * Runs `dsat` services as child processes of this one, each started with the same node, flags
 * and entry script as this process, restarts those that die, and stops them in reverse order.
 */
export class ProcessSupervisor {
  private readonly children: Supervised[] = [];
  private stopping = false;

  constructor(private readonly events: SupervisorEvents) {}

  /** Spawns a child; resolves once it listens, rejects if it exits first (not restarted). */
  start(spec: ChildSpec): Promise<StartedChild> {
    const child: Supervised = {
      spec,
      port: spec.port,
      metricsPort: spec.metricsPort,
      startedAt: 0,
      quickCrashes: 0,
    };
    this.children.push(child);
    return this.spawn(child, false);
  }

  /** Stops every child, the last started first: SIGTERM, then SIGKILL after a grace. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const child of this.children) clearTimeout(child.restart);
    for (const child of [...this.children].reverse()) {
      const proc = child.proc;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) continue;
      const grace = child.spec.stopGraceMs ?? STOP_GRACE_MS;
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => {
          this.events.notice(`${child.spec.name} did not stop within ${grace} ms; killing it`);
          proc.kill('SIGKILL');
        }, grace);
        proc.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        proc.kill('SIGTERM');
      });
    }
  }

  private spawn(child: Supervised, restarted: boolean): Promise<StartedChild> {
    const { name, args, env } = child.spec;
    const proc = spawn(
      process.execPath,
      [
        ...serviceNodeFlags(args[0]!, process.execArgv),
        process.argv[1]!,
        ...args,
        '--port',
        String(child.port),
        ...(child.metricsPort === undefined ? [] : ['--metrics-port', String(child.metricsPort)]),
      ],
      {
        env: serviceEnv({ ...process.env, ...env }),
        // Its own process group: Ctrl-C in a terminal reaches only the supervisor, which then
        // stops the children in order.
        detached: true,
        // The IPC channel closes when the supervisor dies, even by kill -9: the child's cue to
        // exit (exitOnSignals).
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      },
    );
    child.proc = proc;
    child.startedAt = Date.now();
    return new Promise((resolve, reject) => {
      let address: string | undefined;
      let metricsUrl: string | undefined;
      // The child's own error line, "dsat: ...", told with its exit instead of forwarded.
      let lastError = '';
      const onLine = (line: string) => {
        const listening = address === undefined && /^\S+ listening on (\S+)$/.exec(line);
        // Printed just before "listening on".
        const metrics = address === undefined && /^\S+ metrics at (\S+)$/.exec(line);
        if (metrics) {
          metricsUrl = metrics[1]!;
          child.metricsPort = Number(new URL(metricsUrl).port);
        } else if (listening) {
          address = listening[1]!;
          child.port = Number(address.split(':').pop());
          if (restarted) this.events.notice(`${name} is back on ${address} (pid ${proc.pid})`);
          resolve({ name, address, pid: proc.pid!, ...(metricsUrl ? { metricsUrl } : {}) });
        } else if (line.startsWith('dsat: ')) {
          lastError = line.slice('dsat: '.length);
        } else {
          process.stderr.write(`[${name}] ${line}\n`);
        }
      };
      proc.on('error', (err) => (lastError ||= err.message));
      readline.createInterface({ input: proc.stdout! }).on('line', onLine);
      readline.createInterface({ input: proc.stderr! }).on('line', onLine);
      // 'close' comes after the last output line, so lastError is complete.
      proc.on('close', (code, signal) => {
        const how =
          (signal ? `was killed by ${signal}` : `exited with code ${code}`) +
          (lastError ? `: ${lastError}` : '');
        if (this.stopping) {
          if (code !== 0 && signal !== 'SIGKILL') this.events.notice(`${name} ${how}`);
        } else if (!restarted && address === undefined) {
          reject(new Error(`${name} did not start: it ${how}`));
        } else {
          this.crashed(child, `${name} (pid ${proc.pid}) ${how}`);
        }
      });
    });
  }

  private crashed(child: Supervised, what: string): void {
    const quick = Date.now() - child.startedAt < QUICK_CRASH_MS;
    child.quickCrashes = quick ? child.quickCrashes + 1 : 0;
    if (child.quickCrashes >= MAX_QUICK_CRASHES) {
      this.events.giveUp(
        new Error(
          `${what}; it crashed ${MAX_QUICK_CRASHES} times in a row within ${QUICK_CRASH_MS / 1000}s of starting: giving up, stopping dsat`,
        ),
      );
      return;
    }
    const delay = Math.min(
      BACKOFF_FIRST_MS * 2 ** Math.max(0, child.quickCrashes - 1),
      BACKOFF_MAX_MS,
    );
    this.events.notice(`${what}; restarting it in ${delay / 1000}s`);
    // A failed restart ends in 'close' again, which counts as one more crash.
    child.restart = setTimeout(() => void this.spawn(child, true), delay);
  }
}
