import { TaskState } from '../../../gen/dsat/task/v1/task';
import { MemberKind } from '../../../gen/dsat/tracker/v1/tracker';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import { ExecLog, FAULT_MODES, applyPipeline } from '../../helpers/exec-log';
import type { TrackerClient } from '../../helpers/mesh-harness';
import {
  FeedRecorder,
  is,
  TestRouter,
  spawnStatus,
  spawnTracker,
  statusClient,
  trackerClient,
  waitForLog,
} from '../../helpers/mesh-harness';
import type { RunningProcess } from '../../helpers/processes';
import { faketimeEnv } from '../../helpers/processes';
import { jsonEntry, ProcessMesh, submitMany } from '../../helpers/process-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(90_000);

const S = TaskState;

/** The tracker's wall clock 30 s ahead of the status service's; its monotonic clock untouched. */
const AHEAD = faketimeEnv('+30s');

/** How far the tracker's wall clock is from ours: it stamps a joining member with it. */
async function trackerSkewMs(tracker: TrackerClient): Promise<number> {
  const before = Date.now();
  const { memberId } = await tracker.join({
    member: { memberId: 'clock-probe', kind: MemberKind.MEMBER_KIND_WORKER },
  });
  const probe = (await tracker.getMesh({})).members.find((m) => m.memberId === memberId)!;
  await tracker.leave({ memberId });
  return probe.joinedAt!.getTime() - before;
}

describe('T17: a tracker whose wall clock runs 30 s ahead (faketime)', () => {
  const procs: RunningProcess[] = [];
  const cleanups: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const p of procs) p.kill('SIGKILL');
    await Promise.all(procs.splice(0).map((p) => p.exited));
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('times out neither early nor late, live and after a restart', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.cleanup());
    const status = await spawnStatus(dir.path);
    procs.push(status.p);
    const tracker = await spawnTracker(status.address, [], AHEAD);
    procs.push(tracker.p);
    expect(Math.abs((await trackerSkewMs(trackerClient(tracker.address))) - 30_000)).toBeLessThan(
      5_000,
    );
    const client = statusClient(status.address);
    const apply = async (yaml: string) =>
      (
        await trackerClient(tracker.address).applyPipeline({
          pipeline: parsePipelineText(yaml),
          validateOnly: false,
        })
      ).pipeline!;
    const quick = await apply('name: quick\nstages: [{name: work, run_timeout: 2s}]');
    const slow = await apply('name: slow\nstages: [{name: work, run_timeout: 6s}]');
    const feed = new FeedRecorder(client, (await client.getStoreStats({})).revision);
    cleanups.push(() => feed.stop());
    const router = new TestRouter(client);

    // Live: armed from the feed on the monotonic clock.
    const live = await router.submit(quick);
    await router.start(live, 1);
    const running = await feed.waitFor('RUNNING', is(live, S.TASK_STATE_RUNNING), 5_000);
    const timedOut = await feed.waitFor('TIMED_OUT', is(live, S.TASK_STATE_TIMED_OUT), 5_000);
    expect(timedOut.seenAt - running.seenAt).toBeGreaterThanOrEqual(1_500);
    expect(timedOut.seenAt - running.seenAt).toBeLessThanOrEqual(2_500);

    // Re-armed after a restart: the record's age is read on the store's clock, so the skewed
    // tracker neither takes the task for 30 s older (and fires at once) nor waits longer.
    const pending = await router.submit(slow);
    await router.start(pending, 1);
    const started = await feed.waitFor('RUNNING', is(pending, S.TASK_STATE_RUNNING), 5_000);
    tracker.p.kill('SIGKILL');
    await tracker.p.exited;
    const again = await spawnTracker(status.address, [], AHEAD);
    procs.push(again.p);
    const rearmed = await waitForLog(again.p, /timers re-armed from the store/);
    const late = await feed.waitFor('TIMED_OUT', is(pending, S.TASK_STATE_TIMED_OUT), 15_000);
    expect(late.seenAt - started.seenAt).toBeGreaterThanOrEqual(6_000 - 300);
    expect(late.seenAt - started.seenAt).toBeLessThanOrEqual(
      Math.max(6_000, rearmed - started.seenAt) + 1_000,
    );
  });
});

describe('T17: a mesh with the tracker 30 s ahead and a worker 30 s behind (faketime)', () => {
  let mesh: ProcessMesh;
  let feed: FeedRecorder | undefined;
  const dirs: { cleanup(): void }[] = [];
  afterEach(async () => {
    await feed?.stop();
    feed = undefined;
    await mesh?.stop();
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it('runs a normal load with no premature or late timeout, and every task keeps its sequence', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const log = new ExecLog(tmp.path);
    mesh = new ProcessMesh();
    await mesh.startStatus(['--no-sync']);
    await mesh.startTracker([], AHEAD);
    await mesh.startRouter();
    expect(Math.abs((await trackerSkewMs(mesh.tracker())) - 30_000)).toBeLessThan(5_000);
    // Run timeouts are the tracker's, heartbeat timeouts the router's.
    await applyPipeline(
      mesh,
      'name: skewed\nstages: [{name: skewed, run_timeout: 3s, heartbeat_timeout: 2s, max_attempts: 2}]',
    );
    await applyPipeline(
      mesh,
      'name: hang\nstages: [{name: hang, run_timeout: 2s, max_attempts: 1}]',
    );
    const flags = ['--concurrency', '4'];
    const stages = ['skewed', 'hang'];
    const onTime = await mesh.startWorker(FAULT_MODES, stages, flags, undefined, log.env);
    const behind = await mesh.startWorker(FAULT_MODES, stages, flags, undefined, {
      ...log.env,
      ...faketimeEnv('-30s'),
    });
    const startedAt = (await mesh.worker(behind.address).getWorkerInfo({})).startedAt!;
    expect(Math.abs(startedAt.getTime() - Date.now() + 30_000)).toBeLessThan(5_000);
    await mesh.waitForWorkers(stages, undefined, 2);
    feed = new FeedRecorder(mesh.status, (await mesh.status.getStoreStats({})).revision);

    // 60 tasks of 100–400 ms, well inside their timeouts; 4 that hang until their run timeout.
    const ids = await submitMany(mesh.router(), [
      ...Array.from({ length: 60 }, (_, i) =>
        jsonEntry('skewed', `s${i}`, { i, ms: 100 + ((i * 53) % 300) }),
      ),
      ...Array.from({ length: 4 }, (_, i) =>
        jsonEntry('hang', `h${i}`, { i: 100 + i, mode: 'hold', file: 'never' }),
      ),
    ]);
    const work = [...ids].filter(([ref]) => ref.startsWith('s')).map(([, id]) => id);
    const hangs = [...ids].filter(([ref]) => ref.startsWith('h')).map(([, id]) => id);
    for (const id of work) {
      await feed.waitFor(`${id} SUCCEEDED`, is(id, S.TASK_STATE_SUCCEEDED), 30_000);
    }
    for (const id of hangs) {
      const dead = await feed.waitFor(
        `${id} DEAD_LETTERED`,
        is(id, S.TASK_STATE_DEAD_LETTERED),
        30_000,
      );
      expect(dead.t.error?.code).toBe('RUN_TIMEOUT');
    }

    // No premature timeout: the normal load never timed out, and ran on both workers.
    const timedOut = feed.seen.filter((s) => s.t.toState === S.TASK_STATE_TIMED_OUT);
    expect(timedOut.map((s) => s.t.taskId).sort()).toEqual([...hangs].sort());
    for (const id of work) expect(feed.of(id).map((s) => s.t.attempt)).not.toContain(2);
    const runners = new Set(
      log
        .read()
        .filter((e) => work.includes(e.taskId))
        .map((e) => e.pid),
    );
    expect(runners).toEqual(new Set([onTime.p.child.pid, behind.p.child.pid]));
    // No late one either: each hanging task timed out 2 s after it started running.
    for (const id of hangs) {
      const running = feed.of(id).find((s) => s.t.toState === S.TASK_STATE_RUNNING)!;
      const out = feed.of(id).find((s) => s.t.toState === S.TASK_STATE_TIMED_OUT)!;
      expect(out.t.reason).toBe('RUN_TIMEOUT');
      expect(out.seenAt - running.seenAt).toBeGreaterThanOrEqual(2_000 - 500);
      expect(out.seenAt - running.seenAt).toBeLessThanOrEqual(2_000 + 1_000);
    }

    // Ordering: the feed in revision order; each task's log numbered 1, 2, 3… without a gap,
    // each transition leaving the state the one before entered, and stamped in order.
    const revisions = feed.seen.map((s) => s.t.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => a - b));
    expect(new Set(revisions).size).toBe(revisions.length);
    for (const id of [...work, ...hangs]) {
      const { transitions } = await mesh.status.getTaskHistory({ taskId: id });
      expect(transitions.map((t) => t.seq)).toEqual(transitions.map((_, k) => k + 1));
      for (let k = 1; k < transitions.length; k++) {
        expect(transitions[k]!.fromState).toBe(transitions[k - 1]!.toState);
        expect(transitions[k]!.revision).toBeGreaterThan(transitions[k - 1]!.revision);
        expect(transitions[k]!.at!.getTime()).toBeGreaterThanOrEqual(
          transitions[k - 1]!.at!.getTime(),
        );
      }
      // The store's clock stamps every transition, whoever wrote it.
      expect(
        Math.abs(transitions[transitions.length - 1]!.at!.getTime() - Date.now()),
      ).toBeLessThan(20_000);
    }
  });
});
