import type { Logger } from './logger';

/** The order every dsat process shuts down in (DESIGN.md, "Streaming handoff"). */
export const SHUTDOWN_PHASES = [
  'not-serving',
  'stop-work',
  'terminate-streams',
  'server',
  'close-store',
  'flush-telemetry',
] as const;
export type ShutdownPhase = (typeof SHUTDOWN_PHASES)[number];

export interface Shutdown {
  on(phase: ShutdownPhase, name: string, step: () => Promise<void> | void): void;
  /**
   * Runs every step once, phase by phase; later calls return the same promise. `urgent`: the
   * process cannot go on (its store failed), so steps skip waits that could change nothing, such
   * as a worker's drain.
   */
  run(reason: string, options?: { urgent?: boolean }): Promise<void>;
  readonly started: boolean;
  readonly urgent: boolean;
}

export function createShutdown(logger: Logger): Shutdown {
  const steps: { phase: ShutdownPhase; name: string; step: () => Promise<void> | void }[] = [];
  let running: Promise<void> | undefined;
  let urgent = false;
  return {
    on(phase, name, step) {
      steps.push({ phase, name, step });
    },
    get started() {
      return running !== undefined;
    },
    get urgent() {
      return urgent;
    },
    run(reason, options) {
      if (options?.urgent) urgent = true;
      running ??= (async () => {
        logger.info({ reason }, 'shutting down');
        for (const phase of SHUTDOWN_PHASES) {
          // Steps of one phase run together: the four servers of `dsat up` stop side by side.
          await Promise.all(
            steps
              .filter((s) => s.phase === phase)
              .map(async (s) => {
                try {
                  await s.step();
                } catch (err) {
                  logger.error({ err, phase, step: s.name }, 'shutdown step failed');
                }
              }),
          );
        }
        logger.info('stopped');
      })();
      return running;
    },
  };
}

/** What a person at a terminal is told: the shutdown started; it ended well (just before exit). */
export interface ShutdownNotices {
  readonly stopping?: () => void;
  readonly stopped?: () => void;
}

/**
 * SIGINT/SIGTERM run the shutdown and exit 0 (1 if a step threw past its handler); a second
 * signal exits at once. A process spawned with an IPC channel (a service of
 * `dsat up --processes`) does the same when the channel closes: its parent is gone, even by
 * kill -9, and it must not linger as an orphan.
 */
export function exitOnSignals(
  shutdown: Shutdown,
  logger: Logger,
  notices: ShutdownNotices = {},
): void {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals | 'parent gone') => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    notices.stopping?.();
    shutdown.run(signal).then(
      () => {
        notices.stopped?.();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (process.send) process.on('disconnect', () => onSignal('parent gone'));
}
