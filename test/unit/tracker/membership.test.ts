import type { StageLoad } from '../../../gen/dsat/router/v1/router';
import type { Member } from '../../../gen/dsat/tracker/v1/tracker';
import { MemberKind, ScalingAction } from '../../../gen/dsat/tracker/v1/tracker';
import { DsatError } from '../../../services/shared/errors';
import { createMembership } from '../../../services/tracker/membership';
import { systemClock } from '../../../services/tracker/monotonic-clock';

const member = (m: Partial<Member>): Member => ({
  memberId: '',
  kind: MemberKind.MEMBER_KIND_ROUTER,
  address: '127.0.0.1:7402',
  stages: [],
  labels: {},
  joinedAt: undefined,
  lastSeenAt: undefined,
  version: '0.1.0',
  ...m,
});

const load = (stage: string, l: Partial<StageLoad>): StageLoad => ({
  stage,
  queueDepth: 0,
  inFlight: 0,
  workers: 0,
  freeCredit: 0,
  completed: 0,
  failed: 0,
  throughputPerS: 0,
  ...l,
});

describe('membership', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());
  const setup = () => createMembership({ clock: systemClock, memberTtlMs: 15_000 });

  it('welcomes a member with its id, the heartbeat interval and the TTL', () => {
    const m = setup();
    expect(m.join(member({ memberId: 'r1' }))).toEqual({
      memberId: 'r1',
      heartbeatIntervalMs: 5_000,
      memberTtlMs: 15_000,
    });
    const generated = m.join(member({ kind: MemberKind.MEMBER_KIND_WORKER, address: '' }));
    expect(generated.memberId).toMatch(/^worker-[0-9a-f-]{36}$/);
    const listed = m.mesh().members.find((x) => x.memberId === 'r1');
    expect(listed?.joinedAt).toEqual(new Date(Date.now()));
  });

  it('refuses a join without a kind, a router without an address, or a bad stage, naming each field', () => {
    const m = setup();
    let err: unknown;
    try {
      m.join(
        member({
          kind: MemberKind.MEMBER_KIND_UNSPECIFIED,
          address: 'nope',
          stages: ['Bad Stage'],
        }),
      );
    } catch (e) {
      err = e;
    }
    expect((err as DsatError).violations.map((v) => v.field)).toEqual([
      'member.kind',
      'member.address',
      'member.stages[0]',
    ]);
    expect(() => m.join(member({ address: '' }))).toThrow('a router must give the address');
    expect(() => m.join(undefined)).toThrow(DsatError);
  });

  it('refuses a port out of range, control characters, oversized labels and version, naming each field', () => {
    const m = setup();
    const fields = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as DsatError).violations.map((v) => v.field);
      }
      return [];
    };
    expect(
      fields(() =>
        m.join(
          member({
            memberId: 'r\n1',
            address: 'localhost:99999',
            version: 'v'.repeat(65),
            labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])),
          }),
        ),
      ),
    ).toEqual(['member.member_id', 'member.address', 'member.version', 'member.labels']);
    expect(fields(() => m.join(member({ address: 'localhost:0' })))).toEqual(['member.address']);
    expect(m.mesh().members).toEqual([]);
  });

  it('refuses a load report with a bad stage, an impossible worker count or throughput, and counts none of it', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    const bad = [
      load('Bad Stage!', {}),
      load('work', { workers: 4_294_967_295 }),
      load('work', { throughputPerS: Number.NaN }),
    ];
    let err: unknown;
    try {
      m.heartbeat('r1', bad);
    } catch (e) {
      err = e;
    }
    expect((err as DsatError).violations.map((v) => v.field)).toEqual([
      'stages[0].stage',
      'stages[1].workers',
      'stages[2].throughput_per_s',
    ]);
    expect(m.mesh().stages).toEqual([]);
  });

  it('keeps a member that heartbeats and drops one silent past the TTL; it then rejoins', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    m.join(member({ memberId: 'w1', kind: MemberKind.MEMBER_KIND_WORKER, address: '' }));
    for (let i = 0; i < 6; i++) {
      jest.advanceTimersByTime(5_000);
      expect(m.heartbeat('r1', [])).toBe(true);
    }
    // w1 went silent 30 s ago; r1 heartbeated just now.
    expect(m.mesh().members.map((x) => x.memberId)).toEqual(['r1']);
    expect(m.heartbeat('w1', [])).toBe(false);
    jest.advanceTimersByTime(15_000);
    expect(m.heartbeat('r1', [])).toBe(true);
    jest.advanceTimersByTime(15_001);
    expect(m.heartbeat('r1', [])).toBe(false);
    expect(m.join(member({ memberId: 'r1' })).memberId).toBe('r1');
    expect(m.heartbeat('r1', [])).toBe(true);
  });

  it('expires on the monotonic clock: a wall-clock jump drops nobody', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    jest.setSystemTime(Date.now() + 3_600_000);
    expect(m.expire()).toEqual([]);
    expect(m.heartbeat('r1', [])).toBe(true);
  });

  it('lets a member leave at once', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    expect(m.leave('r1')).toBe(true);
    expect(m.leave('r1')).toBe(false);
    expect(m.heartbeat('r1', [])).toBe(false);
  });

  it('resolves a stage to the live routers that serve it; a router with no stages serves all', () => {
    const m = setup();
    m.join(member({ memberId: 'r-b', stages: ['resize'] }));
    m.join(member({ memberId: 'r-a', stages: [] }));
    m.join(member({ memberId: 'r-c', stages: ['thumbs'] }));
    m.join(
      member({
        memberId: 'w1',
        kind: MemberKind.MEMBER_KIND_WORKER,
        address: '',
        stages: ['resize'],
      }),
    );
    expect(m.resolveStage('resize').map((x) => x.memberId)).toEqual(['r-a', 'r-b']);
    expect(m.resolveStage('other').map((x) => x.memberId)).toEqual(['r-a']);
    jest.advanceTimersByTime(10_000);
    m.heartbeat('r-b', []);
    jest.advanceTimersByTime(6_000);
    expect(m.resolveStage('resize').map((x) => x.memberId)).toEqual(['r-b']);
    expect(() => m.resolveStage('Not A Stage')).toThrow(DsatError);
  });

  it('gives per-stage figures that are the exact sums of the routers’ reported loads', () => {
    const m = setup();
    m.join(member({ memberId: 'r1', stages: ['resize'] }));
    m.join(member({ memberId: 'r2', stages: [] }));
    m.join(
      member({
        memberId: 'w1',
        kind: MemberKind.MEMBER_KIND_WORKER,
        address: '',
        stages: ['resize'],
      }),
    );
    m.heartbeat('r1', [
      load('resize', {
        queueDepth: 4,
        inFlight: 6,
        workers: 2,
        freeCredit: 2,
        completed: 100,
        failed: 10,
        throughputPerS: 5,
      }),
    ]);
    m.heartbeat('r2', [
      load('resize', {
        queueDepth: 1,
        inFlight: 3,
        workers: 1,
        freeCredit: 1,
        completed: 50,
        failed: 0,
        throughputPerS: 2.5,
      }),
      load('thumbs', {
        queueDepth: 0,
        inFlight: 1,
        workers: 1,
        freeCredit: 3,
        completed: 9,
        failed: 1,
        throughputPerS: 0.5,
      }),
    ]);
    // A worker's load does not count: routers report the pools.
    m.heartbeat('w1', [load('resize', { queueDepth: 1000 })]);
    jest.advanceTimersByTime(4_000);
    m.heartbeat('r1', [
      load('resize', {
        queueDepth: 4,
        inFlight: 6,
        workers: 2,
        freeCredit: 2,
        completed: 160,
        failed: 25,
        throughputPerS: 5,
      }),
    ]);
    m.heartbeat('r2', [
      load('resize', {
        queueDepth: 1,
        inFlight: 3,
        workers: 1,
        freeCredit: 1,
        completed: 90,
        failed: 5,
        throughputPerS: 2.5,
      }),
    ]);

    const mesh = m.mesh();
    expect(mesh.members.map((x) => x.memberId)).toEqual(['r1', 'r2', 'w1']);
    const [resize, thumbs] = mesh.stages;
    expect(resize).toMatchObject({
      stage: 'resize',
      workers: 3,
      freeCredit: 3,
      inFlight: 9,
      queueDepth: 5,
      throughputPerS: 7.5,
      routerIds: ['r1', 'r2'],
    });
    // (25-10 + 5-0) failed of (60+15 + 40+5) attempts since the first reports.
    expect(resize?.errorRate).toBe(20 / 120);
    // One report only: counted since the router started.
    expect(thumbs).toMatchObject({
      stage: 'thumbs',
      workers: 1,
      freeCredit: 3,
      inFlight: 1,
      errorRate: 0.1,
      routerIds: ['r2'],
    });
    expect(resize?.advice?.action).toBe(ScalingAction.SCALING_ACTION_HOLD);
  });

  it('measures the error rate over the last minute', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    const beat = (completed: number, failed: number) => {
      m.heartbeat('r1', [load('s', { completed, failed })]);
      jest.advanceTimersByTime(5_000);
    };
    beat(0, 0); // t=0
    for (let i = 1; i <= 12; i++) beat(100 * i, 50); // all failures before t=5 s
    // At t=65 s the window starts at the t=5 s report: 1100 completed since, no failure.
    expect(m.mesh().stages[0]?.errorRate).toBe(0);
  });

  it('drops a silent router’s load from the figures', () => {
    const m = setup();
    m.join(member({ memberId: 'r1' }));
    m.join(member({ memberId: 'r2' }));
    m.heartbeat('r1', [load('s', { inFlight: 2, workers: 1 })]);
    m.heartbeat('r2', [load('s', { inFlight: 3, workers: 1 })]);
    jest.advanceTimersByTime(10_000);
    m.heartbeat('r1', [load('s', { inFlight: 2, workers: 1 })]);
    jest.advanceTimersByTime(6_000);
    expect(m.mesh().stages[0]).toMatchObject({ inFlight: 2, workers: 1, routerIds: ['r1'] });
  });
});
