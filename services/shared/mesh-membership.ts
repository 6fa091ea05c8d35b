import { delay } from 'abort-controller-x';
import type { Channel } from 'nice-grpc';
import type { StageLoad } from '../../gen/dsat/router/v1/router';
import type { Member, TrackerServiceClient } from '../../gen/dsat/tracker/v1/tracker';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import type { DeepPartial } from '../../gen/dsat/tracker/v1/tracker';
import { createDsatChannel, createDsatClient } from './grpc-client';
import type { Logger } from './logger';
import { durationMs } from './proto-duration';

/** What membership needs of a tracker client: Join, Heartbeat, Leave with a signal and deadline. */
export type MeshTrackerClient = Pick<
  TrackerServiceClient<{ signal?: AbortSignal; deadline?: Date }>,
  'join' | 'heartbeat' | 'leave'
>;

export interface JoinMeshOptions {
  /** The tracker, configured explicitly: membership never looks for, or founds, another mesh. */
  readonly trackerAddress: string;
  /** This process as a member; `joined_at`/`last_seen_at` are the tracker's to set. */
  readonly member: DeepPartial<Member>;
  /** The load to report with each heartbeat (routers); workers report none. */
  readonly load?: () => StageLoad[];
  /** Aborting it stops heartbeats and leaves the mesh. */
  readonly signal: AbortSignal;
  readonly logger?: Logger;
  /** A client to use instead of one made from `trackerAddress` (tests). */
  readonly client?: MeshTrackerClient;
  /** Longest wait between two tries to reach the tracker. Default 5 s. */
  readonly maxBackoffMs?: number;
  /** Deadline of each call. Default 3 s. */
  readonly callTimeoutMs?: number;
  /** [0, 1), for the retry jitter. */
  readonly random?: () => number;
}

export interface MeshMembership {
  /** The id the tracker knows this member by, once it joined. */
  readonly memberId: string | undefined;
  /** True between a successful Join and the next failure or `known: false`. */
  readonly joined: boolean;
  /** Resolves with the member id at the first successful Join. */
  whenJoined(): Promise<string>;
  /** Resolves once the signal aborted and the member left. */
  readonly done: Promise<void>;
}

/**
 * Keeps this process a member of the mesh through ONE configured tracker: Join, then Heartbeat at
 * the interval the tracker gives (with the load), joining again when a heartbeat answers
 * `known: false` (the tracker restarted or dropped us). An unreachable tracker is tried again
 * with capped, jittered backoff, forever: unlike PYDEVTS's join-or-found, a process that cannot
 * reach the tracker stays outside the mesh and keeps trying; nothing here can start a mesh.
 */
export function joinMesh(options: JoinMeshOptions): MeshMembership {
  const { signal, logger } = options;
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  const callTimeout = options.callTimeoutMs ?? 3_000;
  const random = options.random ?? Math.random;
  const channel = options.client ? undefined : createDsatChannel(options.trackerAddress);
  const client = options.client ?? createDsatClient(TrackerServiceDefinition, channel as Channel);
  let memberId: string | undefined;
  let joined = false;
  let resolveJoined: (id: string) => void = () => undefined;
  let rejectJoined: (err: Error) => void = () => undefined;
  const firstJoin = new Promise<string>((resolve, reject) => {
    resolveJoined = resolve;
    rejectJoined = reject;
  });
  firstJoin.catch(() => undefined);
  const call = () => ({ signal, deadline: new Date(Date.now() + callTimeout) });

  const run = async () => {
    let backoff = 200;
    let warned = false;
    while (!signal.aborted) {
      try {
        const member = { ...options.member, memberId: memberId ?? options.member.memberId ?? '' };
        const res = await client.join({ member }, call());
        memberId = res.memberId;
        joined = true;
        warned = false;
        backoff = 200;
        resolveJoined(res.memberId);
        logger?.info({ memberId, tracker: options.trackerAddress }, 'joined the mesh');
        const every = durationMs(res.heartbeatInterval) || 5_000;
        for (;;) {
          await delay(signal, every);
          const beat = await client.heartbeat(
            { memberId: res.memberId, stages: options.load?.() ?? [] },
            call(),
          );
          if (!beat.known) {
            logger?.info({ memberId }, 'the tracker no longer knows this member: joining again');
            joined = false;
            break;
          }
        }
      } catch (err) {
        joined = false;
        if (signal.aborted) break;
        if (!warned) {
          logger?.warn(
            { err: (err as Error).message, tracker: options.trackerAddress },
            'the tracker is unreachable; trying again',
          );
          warned = true;
        }
        const wait = backoff * (0.8 + 0.4 * random());
        backoff = Math.min(maxBackoff, backoff * 2);
        await delay(signal, Math.min(maxBackoff, wait)).catch(() => undefined);
      }
    }
    joined = false;
    if (memberId !== undefined) {
      await client
        .leave({ memberId }, { deadline: new Date(Date.now() + Math.min(callTimeout, 1_000)) })
        .catch(() => undefined);
    } else {
      rejectJoined(new Error('stopped before the member could join the mesh'));
    }
    channel?.close();
  };

  const done = run();
  return {
    get memberId() {
      return memberId;
    },
    get joined() {
      return joined;
    },
    whenJoined: () => firstJoin,
    done,
  };
}
