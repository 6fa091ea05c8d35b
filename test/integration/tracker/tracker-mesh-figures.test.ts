import type { GetMeshResponse } from '../../../gen/dsat/tracker/v1/tracker';
import { MemberKind } from '../../../gen/dsat/tracker/v1/tracker';
import { ExecLog, FAULT_MODES, applyPipeline } from '../../helpers/exec-log';
import { jsonEntry, ProcessMesh, ResultFeed, submitMany } from '../../helpers/process-mesh';
import { eventually } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(60_000);

/** The figures of GetMesh that a scripted load fixes exactly (advice and throughput vary). */
function figures(mesh: GetMeshResponse) {
  return {
    members: mesh.members.map((m) => `${MemberKind[m.kind]} ${m.memberId}`),
    stages: mesh.stages.map((s) => ({
      stage: s.stage,
      workers: s.workers,
      freeCredit: s.freeCredit,
      inFlight: s.inFlight,
      queueDepth: s.queueDepth,
      errorRate: s.errorRate,
      routerIds: s.routerIds,
    })),
  };
}

describe('GetMesh with real routers and workers', () => {
  let mesh: ProcessMesh;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it('sums what two routers and their workers do, figure by figure, as a scripted load moves', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const log = new ExecLog(tmp.path);
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    // Members heartbeat every third of the TTL: the tracker's view lags by half a second at most.
    await mesh.startTracker(['--member-ttl', '1500ms']);
    const hold = await mesh.startRouter(['--router-id', 'r-hold', '--stages', 'hold']);
    const quick = await mesh.startRouter(['--router-id', 'r-quick', '--stages', 'quick']);
    const quickStarted = performance.now();
    await applyPipeline(mesh, 'name: hold\nstages: [{name: hold, max_attempts: 1}]');
    await applyPipeline(mesh, 'name: quick\nstages: [{name: quick, max_attempts: 3}]');
    const worker = (id: string, stage: string, concurrency: number, router: string) =>
      mesh.startWorker(
        FAULT_MODES,
        [stage],
        ['--worker-id', id, '--concurrency', String(concurrency)],
        [router],
        log.env,
      );
    await worker('w1', 'hold', 2, hold.address);
    const w2 = await worker('w2', 'hold', 3, hold.address);
    await worker('w3', 'quick', 2, quick.address);
    await mesh.waitForWorkers(['hold'], hold.address, 2);
    await mesh.waitForWorkers(['quick'], quick.address, 1);
    const tracker = mesh.tracker();
    const settle = (expected: ReturnType<typeof figures>, what: string) =>
      eventually(
        async () => {
          const now = figures(await tracker.getMesh({}));
          return JSON.stringify(now) === JSON.stringify(expected) || undefined;
        },
        10_000,
        what,
      ).catch(async (err: Error) => {
        // Show the difference, not only that there is one.
        expect(figures(await tracker.getMesh({}))).toEqual(expected);
        throw err;
      });

    // Quick: 4 results and 2 non-retryable failures. Hold: 8 tasks that wait, 5 slots to run in.
    const quickFeed = new ResultFeed();
    await quickFeed.start(mesh.status, 'quick');
    await submitMany(
      mesh.router(quick.address),
      Array.from({ length: 6 }, (_, i) =>
        jsonEntry('quick', `q${i}`, i < 4 ? { i } : { i, mode: 'nonretryable' }),
      ),
    );
    await quickFeed.waitFor(6, 20_000);
    await quickFeed.stop();
    const held = await submitMany(
      mesh.router(hold.address),
      Array.from({ length: 8 }, (_, i) =>
        jsonEntry('hold', `h${i}`, { i, mode: 'hold', file: 'release-hold' }),
      ),
    );
    const holdIds = new Set(held.values());
    await eventually(
      () => log.read().filter((e) => e.event === 'started' && holdIds.has(e.taskId)).length >= 5,
      20_000,
      'five hold tasks running',
    );
    const members = [
      'MEMBER_KIND_ROUTER r-hold',
      'MEMBER_KIND_ROUTER r-quick',
      'MEMBER_KIND_WORKER w1',
      'MEMBER_KIND_WORKER w2',
      'MEMBER_KIND_WORKER w3',
    ];
    const quickFigures = {
      stage: 'quick',
      workers: 1,
      freeCredit: 2,
      inFlight: 0,
      queueDepth: 0,
      errorRate: 2 / 6,
      routerIds: ['r-quick'],
    };
    await settle(
      {
        members,
        stages: [
          {
            stage: 'hold',
            workers: 2,
            freeCredit: 0,
            inFlight: 5,
            queueDepth: 3,
            errorRate: 0,
            routerIds: ['r-hold'],
          },
          quickFigures,
        ],
      },
      'the held load',
    );
    const view = await tracker.getMesh({});
    const tp = view.stages.find((s) => s.stage === 'quick')!.throughputPerS;
    // Six finished over the seconds since the router started (at least one).
    expect(tp).toBeLessThanOrEqual(6);
    expect(tp).toBeGreaterThanOrEqual(6 / ((performance.now() - quickStarted) / 1000 + 2));
    expect(view.stages.find((s) => s.stage === 'hold')!.throughputPerS).toBe(0);

    // Released, the 8 hold tasks finish: every slot free again.
    log.touch('release-hold');
    await settle(
      {
        members,
        stages: [
          {
            stage: 'hold',
            workers: 2,
            freeCredit: 5,
            inFlight: 0,
            queueDepth: 0,
            errorRate: 0,
            routerIds: ['r-hold'],
          },
          quickFigures,
        ],
      },
      'the released load',
    );

    // A worker killed: its router drops its stream at once, the tracker its membership after TTL.
    w2.p.kill('SIGKILL');
    await settle(
      {
        members: members.filter((m) => !m.endsWith('w2')),
        stages: [
          {
            stage: 'hold',
            workers: 1,
            freeCredit: 2,
            inFlight: 0,
            queueDepth: 0,
            errorRate: 0,
            routerIds: ['r-hold'],
          },
          quickFigures,
        ],
      },
      'the load without w2',
    );
  });
});
