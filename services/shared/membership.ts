import { delay } from 'abort-controller-x';
import type { StageLoad } from '../../gen/dsat/router/v1/router';
import type { MemberKind } from '../../gen/dsat/tracker/v1/tracker';
import type { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { DsatClient } from './grpc-client';
import type { Logger } from './logger';

export interface MembershipOptions {
  readonly tracker: DsatClient<typeof TrackerServiceDefinition>;
  readonly memberId: string;
  readonly kind: MemberKind;
  readonly address: string;
  readonly stages: readonly string[];
  readonly labels?: Record<string, string>;
  /** The load reported with each heartbeat (routers). */
  readonly load?: () => StageLoad[];
  readonly logger: Logger;
}

export interface Membership {
  stop(): Promise<void>;
}

const VERSION = '0.1.0';

/**
 * Keeps a process a member of the mesh: Join, then Heartbeat (with its load) at the interval the
 * tracker asks for, joining again when the tracker forgot it. A missing tracker is not an error:
 * everything on the task path works without one, so failures are retried quietly.
 */
export function startMembership(options: MembershipOptions): Membership {
  const abort = new AbortController();
  const { tracker, logger } = options;
  const run = async () => {
    let backoff = 500;
    let warned = false;
    while (!abort.signal.aborted) {
      try {
        const joined = await tracker.join(
          {
            member: {
              memberId: options.memberId,
              kind: options.kind,
              address: options.address,
              stages: [...options.stages],
              labels: options.labels ?? {},
              joinedAt: undefined,
              lastSeenAt: undefined,
              version: VERSION,
            },
          },
          { signal: abort.signal, deadline: new Date(Date.now() + 3_000) },
        );
        backoff = 500;
        warned = false;
        const d = joined.heartbeatInterval;
        const every = d ? Math.max(200, d.seconds * 1000 + d.nanos / 1e6) : 2_000;
        for (;;) {
          await delay(abort.signal, every);
          const res = await tracker.heartbeat(
            { memberId: joined.memberId || options.memberId, stages: options.load?.() ?? [] },
            { signal: abort.signal, deadline: new Date(Date.now() + 3_000) },
          );
          if (!res.known) break;
        }
      } catch (err) {
        if (abort.signal.aborted) return;
        if (!warned) {
          logger.debug({ err: (err as Error).message }, 'tracker unreachable; will try again');
          warned = true;
        }
        await delay(abort.signal, backoff).catch(() => undefined);
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  };
  const running = run().catch(() => undefined);
  return {
    async stop() {
      abort.abort();
      await running;
      await tracker
        .leave({ memberId: options.memberId }, { deadline: new Date(Date.now() + 500) })
        .catch(() => undefined);
    },
  };
}
