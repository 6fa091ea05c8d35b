import { ClientError, Status } from 'nice-grpc-common';
import type { StageLoad } from '../../../gen/dsat/router/v1/router';
import { MemberKind } from '../../../gen/dsat/tracker/v1/tracker';
import type { MeshTrackerClient } from '../../../services/shared/mesh-membership';
import { joinMesh } from '../../../services/shared/mesh-membership';
import { msDuration } from '../../../services/shared/proto-duration';

/** A tracker that can be down, can forget its members, and records every call. */
function fakeTracker() {
  const calls: string[] = [];
  const known = new Set<string>();
  const loads: StageLoad[][] = [];
  const state = { down: false, joins: 0 };
  const unavailable = () =>
    new ClientError('/dsat.tracker.v1.TrackerService/Join', Status.UNAVAILABLE, 'down');
  const client: MeshTrackerClient = {
    async join(req) {
      calls.push('join');
      if (state.down) throw unavailable();
      state.joins += 1;
      const id = req.member?.memberId || `gen-${state.joins}`;
      known.add(id);
      return { memberId: id, heartbeatInterval: msDuration(1_000), memberTtl: msDuration(3_000) };
    },
    async heartbeat(req) {
      calls.push('heartbeat');
      if (state.down) throw unavailable();
      loads.push(req.stages as StageLoad[]);
      return { known: known.has(req.memberId ?? '') };
    },
    async leave(req) {
      calls.push(`leave ${req.memberId}`);
      known.delete(req.memberId ?? '');
      return {};
    },
  };
  return { client, calls, known, loads, state };
}

const load: StageLoad = {
  stage: 'resize',
  queueDepth: 1,
  inFlight: 2,
  workers: 1,
  freeCredit: 3,
  completed: 4,
  failed: 0,
  throughputPerS: 1,
};

describe('joinMesh', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function start(t: ReturnType<typeof fakeTracker>, memberId = 'r1') {
    const abort = new AbortController();
    const m = joinMesh({
      trackerAddress: '127.0.0.1:1',
      member: {
        memberId,
        kind: MemberKind.MEMBER_KIND_ROUTER,
        address: '127.0.0.1:7402',
        stages: ['resize'],
      },
      load: () => [load],
      signal: abort.signal,
      client: t.client,
      random: () => 0.5,
    });
    return { m, abort };
  }

  it('joins, then heartbeats with its load at the interval the tracker gives', async () => {
    const t = fakeTracker();
    const { m, abort } = start(t);
    await expect(m.whenJoined()).resolves.toBe('r1');
    expect(m.joined).toBe(true);
    await jest.advanceTimersByTimeAsync(3_000);
    expect(t.calls).toEqual(['join', 'heartbeat', 'heartbeat', 'heartbeat']);
    expect(t.loads[0]).toEqual([load]);
    abort.abort();
    await m.done;
    expect(t.calls.at(-1)).toBe('leave r1');
  });

  it('joins again, with the same id, when a heartbeat answers known: false', async () => {
    const t = fakeTracker();
    const { m, abort } = start(t, '');
    expect(await m.whenJoined()).toBe('gen-1');
    t.known.clear(); // the tracker restarted or dropped us
    await jest.advanceTimersByTimeAsync(1_000);
    expect(t.calls).toEqual(['join', 'heartbeat', 'join']);
    expect(m.memberId).toBe('gen-1');
    expect(t.known.has('gen-1')).toBe(true);
    abort.abort();
    await m.done;
  });

  it('keeps trying an unreachable tracker with capped backoff, and never starts a mesh of its own', async () => {
    const t = fakeTracker();
    t.state.down = true;
    const { m, abort } = start(t);
    await jest.advanceTimersByTimeAsync(60_000);
    expect(m.joined).toBe(false);
    const tries = t.calls.filter((c) => c === 'join').length;
    // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s, then every 5 s: about 16 tries in a minute.
    expect(tries).toBeGreaterThanOrEqual(13);
    expect(tries).toBeLessThanOrEqual(18);
    expect(t.calls.every((c) => c === 'join')).toBe(true);
    t.state.down = false;
    await jest.advanceTimersByTimeAsync(5_000);
    expect(m.joined).toBe(true);
    abort.abort();
    await m.done;
  });

  it('rejoins after the tracker was away for a while', async () => {
    const t = fakeTracker();
    const { m, abort } = start(t);
    await m.whenJoined();
    t.state.down = true;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(m.joined).toBe(false);
    t.state.down = false;
    await jest.advanceTimersByTimeAsync(1_000);
    expect(m.joined).toBe(true);
    expect(t.calls.filter((c) => c === 'join').length).toBe(2);
    abort.abort();
    await m.done;
  });

  it('ends without joining when stopped first', async () => {
    const t = fakeTracker();
    t.state.down = true;
    const { m, abort } = start(t);
    abort.abort();
    await m.done;
    await expect(m.whenJoined()).rejects.toThrow('stopped before');
    expect(t.calls.some((c) => c.startsWith('leave'))).toBe(false);
  });
});
