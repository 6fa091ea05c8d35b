import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Status } from 'nice-grpc-common';
import { StatusServiceDefinition } from '../../../gen/dsat/status/v1/status';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import type { RunningProcess } from '../../helpers/processes';
import { spawnDsat, within } from '../../helpers/processes';
import { createWrite, DEMO_PIPELINE } from '../../helpers/status-writes';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(60_000);

async function startStatus(dir: string): Promise<{ p: RunningProcess; address: string }> {
  const p = spawnDsat(['status', '--port', '0', '--data-dir', dir]);
  const m = await p.waitForLine(/^status listening on (\S+)$/);
  return { p, address: m[1]! };
}

/** The task's attempt 1 handed to worker w1. */
function dispatchWrite(taskId: string) {
  return {
    transitionId: `d-${taskId}`,
    taskId,
    expectedState: TaskState.TASK_STATE_QUEUED,
    expectedAttempt: 1,
    toState: TaskState.TASK_STATE_DISPATCHED,
    stage: 'parse',
    attempt: 1,
    workerId: 'w1',
    reason: 'DISPATCHED',
  };
}

describe('the status service as its own process', () => {
  const dirs: { cleanup(): void }[] = [];
  const procs: RunningProcess[] = [];
  afterEach(() => {
    for (const p of procs.splice(0)) p.kill('SIGKILL');
    for (const d of dirs.splice(0)) d.cleanup();
  });

  it('T15: a write whose 50 ms deadline passed while the service was stopped, sent again with its transition_id, is applied once and answered OK', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const status = await startStatus(tmp.path);
    procs.push(status.p);
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(status.address), {
      retryMaxAttempts: 1,
    });
    await client.savePipeline({ pipeline: DEMO_PIPELINE });
    for (let round = 0; round < 5; round++) {
      const taskId = crypto.randomUUID();
      await client.commitTransitions({ writes: [createWrite(taskId)] });
      const dispatch = dispatchWrite(taskId);
      status.p.child.kill('SIGSTOP');
      const late = client
        .commitTransitions({ writes: [dispatch] }, { deadline: Date.now() + 50 })
        .catch((err: unknown) => err);
      await new Promise((r) => setTimeout(r, 100 + round * 20));
      status.p.child.kill('SIGCONT');
      expect(await late).toMatchObject({ code: Status.DEADLINE_EXCEEDED });
      // The client does not know whether it was applied: it sends the same write again.
      for (let retry = 0; retry < 2; retry++) {
        const again = await client.commitTransitions({ writes: [dispatch] });
        expect(again.outcomes[0]).toMatchObject({ code: 0, taskId });
      }
      const history = (await client.getTaskHistory({ taskId })).transitions;
      expect(history.filter((t) => t.transitionId === dispatch.transitionId)).toHaveLength(1);
      expect((await client.getTask({ taskId })).task).toMatchObject({
        state: TaskState.TASK_STATE_DISPATCHED,
        attempt: 1,
      });
    }
  });

  it('T21: in a rolling restart the new process, started with --lock-wait before the old one stops, takes the store once it is let go; no acknowledged write is lost', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const old = await startStatus(tmp.path);
    procs.push(old.p);
    const clientOf = (address: string) =>
      createDsatClient(StatusServiceDefinition, createDsatChannel(address), {
        retryMaxAttempts: 1,
        deadline: 2_000,
      });
    let client = clientOf(old.address);
    await client.savePipeline({ pipeline: DEMO_PIPELINE });
    const acked: string[] = [];
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const taskId = crypto.randomUUID();
        const res = await client
          .commitTransitions({ writes: [createWrite(taskId)] })
          .catch(() => undefined);
        if (res?.outcomes[0]?.code === 0) acked.push(taskId);
        else await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const next = spawnDsat(['status', '--port', '0', '--data-dir', tmp.path, '--lock-wait', '20s']);
    procs.push(next);
    const listening = next.waitForLine(/^status listening on (\S+)$/, 30_000);
    // It waits for the lock rather than failing: still there, not serving, while the old one works.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(next.child.exitCode).toBeNull();
    expect(next.stdout.join('\n')).not.toMatch(/listening/);
    const beforeStop = acked.length;
    expect(beforeStop).toBeGreaterThan(0);
    old.p.kill('SIGTERM');
    expect(await within(old.p.exited, 20_000, 'the old process to stop')).toBe(0);
    const m = await listening;
    client = clientOf(m[1]!);
    await new Promise((r) => setTimeout(r, 300));
    writing = false;
    await writer;
    expect(acked.length).toBeGreaterThan(beforeStop);
    const missing: string[] = [];
    for (const taskId of acked) {
      const found = await client.getTask({ taskId }).catch(() => undefined);
      if (found?.task?.taskId !== taskId) missing.push(taskId);
    }
    expect(missing).toEqual([]);
  });

  it('keeps acknowledged writes across kill -9 and streams a watch from a revision', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const first = await startStatus(tmp.path);
    procs.push(first.p);
    let client = createDsatClient(StatusServiceDefinition, createDsatChannel(first.address));
    await client.savePipeline({ pipeline: DEMO_PIPELINE });
    const taskId = crypto.randomUUID();
    const created = await client.commitTransitions({ writes: [createWrite(taskId)] });
    expect(created.outcomes[0]).toMatchObject({ code: 0, taskId });
    const dispatched = await client.commitTransitions({
      writes: [dispatchWrite(taskId)],
    });
    expect(dispatched.outcomes[0]?.code).toBe(0);

    first.p.kill('SIGKILL');
    await first.p.exited;
    const second = await startStatus(tmp.path);
    procs.push(second.p);
    client = createDsatClient(StatusServiceDefinition, createDsatChannel(second.address));
    const { task } = await client.getTask({ taskId });
    expect(task?.state).toBe(TaskState.TASK_STATE_DISPATCHED);
    const { transitions } = await client.getTaskHistory({ taskId });
    expect(transitions.map((t) => TaskState[t.toState])).toEqual([
      'TASK_STATE_SUBMITTED',
      'TASK_STATE_QUEUED',
      'TASK_STATE_DISPATCHED',
    ]);

    // A stale attempt is refused and changes nothing.
    const stale = await client.commitTransitions({
      writes: [
        {
          transitionId: `r-${taskId}`,
          taskId,
          expectedState: TaskState.TASK_STATE_DISPATCHED,
          expectedAttempt: 7,
          toState: TaskState.TASK_STATE_RUNNING,
          stage: 'parse',
          attempt: 7,
          reason: 'STARTED',
        },
      ],
    });
    expect(stale.outcomes[0]?.code).toBe(Status.FAILED_PRECONDITION);

    // Resuming a watch after the first transition replays the rest, in order, with no snapshot.
    const seen: string[] = [];
    for await (const e of client.watchTask({ taskId, fromRevision: transitions[0]!.revision })) {
      if (e.event?.$case === 'transition') seen.push(TaskState[e.event.value.toState]);
      else seen.push('snapshot');
      if (seen.length === 2) break;
    }
    expect(seen).toEqual(['TASK_STATE_QUEUED', 'TASK_STATE_DISPATCHED']);
  });

  it('refuses a second process on the same directory with LEVEL_LOCKED and leaves the first serving (T20)', async () => {
    const tmp = tempDir();
    dirs.push(tmp);
    const first = await startStatus(tmp.path);
    procs.push(first.p);
    const second = spawnDsat(['status', '--port', '0', '--data-dir', tmp.path]);
    procs.push(second);
    const code = await within(second.exited, 20_000, 'second opener to exit');
    expect(code).not.toBe(0);
    expect(second.stderr.join('\n')).toMatch(/LEVEL_LOCKED/);
    expect(second.stderr.join('\n')).toContain(tmp.path);
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(first.address));
    await expect(client.getStoreStats({})).resolves.toBeDefined();
  });

  it.each([
    [
      'the newest .log truncated',
      (dir: string) => {
        const logs = fs.readdirSync(dir).filter((f) => f.endsWith('.log'));
        fs.truncateSync(path.join(dir, logs.sort().at(-1)!), 10);
      },
      /is damaged and was not opened/,
    ],
    [
      'CURRENT naming a missing manifest',
      (dir: string) => fs.writeFileSync(path.join(dir, 'CURRENT'), 'MANIFEST-999999\n'),
      /cannot open status store .*MANIFEST-999999/,
    ],
  ])(
    'refuses to start on a damaged store instead of starting empty: %s (T19)',
    async (_, damage, said) => {
      const tmp = tempDir();
      dirs.push(tmp);
      const first = await startStatus(tmp.path);
      const client = createDsatClient(StatusServiceDefinition, createDsatChannel(first.address));
      await client.savePipeline({ pipeline: DEMO_PIPELINE });
      const created = await client.commitTransitions({
        writes: [createWrite(crypto.randomUUID())],
      });
      expect(created.outcomes[0]?.code).toBe(0);
      first.p.kill('SIGINT');
      expect(await within(first.p.exited, 10_000, 'status to stop')).toBe(0);
      damage(tmp.path);
      const again = spawnDsat(['status', '--port', '0', '--data-dir', tmp.path]);
      procs.push(again);
      const code = await within(again.exited, 20_000, 'damaged store start to fail');
      expect(code).not.toBe(0);
      const stderr = again.stderr.join('\n');
      expect(stderr).toContain(tmp.path);
      expect(stderr).toMatch(said);
    },
  );
});
