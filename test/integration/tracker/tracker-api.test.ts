import { Status } from 'nice-grpc-common';
import { BadRequest, ErrorInfo, RichClientError } from 'nice-grpc-error-details';
import type { StageLoad } from '../../../gen/dsat/router/v1/router';
import { MemberKind } from '../../../gen/dsat/tracker/v1/tracker';
import { loadConfig, statusConfigSpec, trackerConfigSpec } from '../../../services/shared/config';
import { createLogger } from '../../../services/shared/logger';
import { joinMesh } from '../../../services/shared/mesh-membership';
import type { ServiceHandle } from '../../../services/shared/service-host';
import { startStatusServer } from '../../../services/status/server';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import type { TrackerHandle } from '../../../services/tracker/server';
import { startTrackerServer } from '../../../services/tracker/server';
import { trackerClient } from '../../helpers/mesh-harness';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(30_000);
const logger = createLogger('test', 'silent');

async function waitUntil(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the tracker API, in process, with a real status service', () => {
  const dir = tempDir();
  let status: ServiceHandle;
  const trackers: TrackerHandle[] = [];

  const startTracker = (port = 0, memberTtl = '15s') =>
    startTrackerServer(
      loadConfig(
        trackerConfigSpec,
        { port: String(port), statusAddress: status.address, memberTtl, shutdownGrace: '1s' },
        {},
      ),
      { logger },
    ).then((t) => (trackers.push(t), t));

  beforeAll(async () => {
    status = await startStatusServer(
      loadConfig(statusConfigSpec, { port: '0', dataDir: dir.path }, {}),
      { logger },
    );
  });
  afterEach(async () => {
    for (const t of trackers.splice(0)) await t.shutdown();
  });
  afterAll(async () => {
    await status.shutdown();
    dir.cleanup();
  });

  it('applies pipelines as versions, and refuses a bad one listing every problem with its field', async () => {
    const tracker = await startTracker();
    const client = trackerClient(tracker.address);
    const yaml = 'name: api\nstages: [{name: a, next: [b], run_timeout: 5s}, {name: b}]';
    const first = await client.applyPipeline({
      pipeline: parsePipelineText(yaml),
      validateOnly: false,
    });
    expect(first).toMatchObject({ changed: true, pipeline: { name: 'api', version: 1 } });
    const again = await client.applyPipeline({
      pipeline: parsePipelineText(yaml),
      validateOnly: false,
    });
    expect(again).toMatchObject({ changed: false, pipeline: { version: 1 } });
    const dry = await client.applyPipeline({
      pipeline: parsePipelineText(yaml),
      validateOnly: true,
    });
    expect(dry).toMatchObject({ changed: false, pipeline: { version: 1 } });
    expect((await client.getPipeline({ name: 'api', version: 0 })).pipeline?.version).toBe(1);
    expect((await client.listPipelines({})).pipelines.map((p) => p.name)).toContain('api');
    await expect(client.getPipeline({ name: 'none', version: 0 })).rejects.toMatchObject({
      code: Status.NOT_FOUND,
    });

    const bad = parsePipelineText(
      'name: api\nstages: [{name: a, next: [b, zz], run_timeout: 5s, heartbeat_timeout: 9s}, {name: b, next: [a]}]',
    );
    const err = (await client
      .applyPipeline({ pipeline: bad, validateOnly: false })
      .catch((e: unknown) => e)) as RichClientError;
    expect(err).toBeInstanceOf(RichClientError);
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    const fields = (err.extra.find((d) => d.$type === BadRequest.$type) as BadRequest)
      .fieldViolations;
    expect(fields.map((f) => f.field)).toEqual([
      'pipeline.stages[0].next[1]',
      'pipeline.stages[0].heartbeat_timeout',
      'pipeline.stages[1].next[0]',
    ]);
    expect(fields[0]?.description).toContain('stage "a" names unknown next stage "zz"');
    const info = err.extra.find((d) => d.$type === ErrorInfo.$type) as ErrorInfo;
    expect(info.reason).toBe('INVALID_PIPELINE');
    expect((await client.getPipeline({ name: 'api', version: 0 })).pipeline?.version).toBe(1);
  });

  it('keeps members joined through joinMesh, resolves stages and sums their load; rejoins a restarted tracker', async () => {
    let tracker = await startTracker(0, '1500ms');
    const address = tracker.address;
    const port = Number(address.split(':').pop());
    const abort = new AbortController();
    let queueDepth = 3;
    const load = (): StageLoad[] => [
      {
        stage: 'resize',
        queueDepth,
        inFlight: 2,
        workers: 1,
        freeCredit: 1,
        completed: 10,
        failed: 1,
        throughputPerS: 2,
      },
    ];
    const router = joinMesh({
      trackerAddress: address,
      member: {
        memberId: 'router-1',
        kind: MemberKind.MEMBER_KIND_ROUTER,
        address: '127.0.0.1:7402',
        stages: ['resize'],
      },
      load,
      signal: abort.signal,
    });
    const worker = joinMesh({
      trackerAddress: address,
      member: { kind: MemberKind.MEMBER_KIND_WORKER, stages: ['resize'] },
      signal: abort.signal,
    });
    try {
      await router.whenJoined();
      const workerId = await worker.whenJoined();
      const client = trackerClient(address);
      expect(
        (await client.resolveStage({ stage: 'resize' })).routers.map((r) => r.memberId),
      ).toEqual(['router-1']);
      expect((await client.resolveStage({ stage: 'other' })).routers).toEqual([]);
      // The heartbeat interval is a third of the TTL: the load arrives within half a second.
      await waitUntil('the load reported', async () => {
        const mesh = await client.getMesh({});
        return mesh.stages.find((s) => s.stage === 'resize')?.queueDepth === 3;
      });
      const mesh = await client.getMesh({});
      expect(mesh.members.map((m) => m.memberId).sort()).toEqual(['router-1', workerId].sort());
      expect(mesh.stages.find((s) => s.stage === 'resize')).toMatchObject({
        workers: 1,
        freeCredit: 1,
        inFlight: 2,
        queueDepth: 3,
        throughputPerS: 2,
        routerIds: ['router-1'],
      });
      queueDepth = 7;
      await waitUntil('the new load', async () =>
        (await client.getMesh({})).stages.some((s) => s.queueDepth === 7),
      );

      // A new tracker on the same address knows nobody: heartbeats answer known: false, and both
      // members join it again by themselves.
      await tracker.shutdown();
      trackers.splice(trackers.indexOf(tracker), 1);
      tracker = await startTracker(port, '1500ms');
      await waitUntil(
        'both members back',
        async () => (await client.getMesh({})).members.length === 2,
      );
      expect(router.memberId).toBe('router-1');
      expect(worker.memberId).toBe(workerId);

      abort.abort();
      await Promise.all([router.done, worker.done]);
      expect((await client.getMesh({})).members).toEqual([]);
    } finally {
      abort.abort();
    }
  });

  it('drops a member that stops heartbeating once its TTL is over', async () => {
    const tracker = await startTracker(0, '1s');
    const client = trackerClient(tracker.address);
    const joined = await client.join({
      member: { memberId: 'quiet', kind: MemberKind.MEMBER_KIND_WORKER },
    });
    expect(joined.memberTtl).toEqual({ seconds: 1, nanos: 0 });
    expect((await client.heartbeat({ memberId: 'quiet', stages: [] })).known).toBe(true);
    await waitUntil('dropped', async () => (await client.getMesh({})).members.length === 0, 5_000);
    expect((await client.heartbeat({ memberId: 'quiet', stages: [] })).known).toBe(false);
  });
});
