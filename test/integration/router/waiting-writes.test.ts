import { Status } from 'nice-grpc-common';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import { ProcessMesh } from '../../helpers/process-mesh';
import { linear } from '../../helpers/router-mesh';

jest.setTimeout(60_000);

const PAYLOAD = Buffer.alloc(100_000, 7);

/** Submits a 100 kB task to `idle` through the router at `address`, without retries. */
function submitter(address: string) {
  const client = createDsatClient(RouterServiceDefinition, createDsatChannel(address), {
    retryMaxAttempts: 0,
  });
  return (deadlineMs: number) =>
    client.submitTask(
      { pipeline: 'idle', payload: PAYLOAD, contentType: 'application/octet-stream' },
      { deadline: new Date(Date.now() + deadlineMs) },
    );
}

describe('a router whose status service is away', () => {
  let mesh: ProcessMesh | undefined;
  afterEach(async () => {
    for (const p of mesh?.procs ?? []) p.kill('SIGCONT');
    await mesh?.stop();
  });

  it('refuses submits at once with UNAVAILABLE once --max-waiting-write-bytes of writes wait for it, creating nothing, and takes them again when it is back', async () => {
    mesh = new ProcessMesh();
    await mesh.startStatus();
    const status = mesh.procs[0]!;
    await mesh.savePipeline(linear('idle', ['waits']));
    const router = await mesh.startRouter(['--max-waiting-write-bytes', '300KiB']);
    const submit = submitter(router.address);
    await submit(10_000);

    // The status service stops answering: each create waits in the router, payload and all.
    status.child.kill('SIGSTOP');
    const waiting = await Promise.allSettled([submit(1_000), submit(1_000), submit(1_000)]);
    for (const r of waiting)
      expect(r).toMatchObject({ reason: { code: Status.DEADLINE_EXCEEDED } });
    const startedAt = Date.now();
    const refused = await submit(20_000).then(
      () => undefined,
      (err: unknown) => err,
    );
    // Answered at once, not at its deadline, and saying why.
    expect(Date.now() - startedAt).toBeLessThan(10_000);
    expect(refused).toMatchObject({ code: Status.UNAVAILABLE });
    expect(String((refused as Error).message)).toMatch(
      /^\S+ UNAVAILABLE: \d+ bytes of writes wait for the status service.*--max-waiting-write-bytes.*not created/,
    );

    status.child.kill('SIGCONT');
    // The waiting writes go through (their callers gave up: at-least-once, as a retry would be),
    // and the router takes submits again, as soon as they are answered.
    const until = Date.now() + 20_000;
    for (;;) {
      const r = await submit(20_000).catch((err: { code?: Status }) => err);
      if ('taskId' in r) break;
      expect(r.code).toBe(Status.UNAVAILABLE);
      if (Date.now() > until)
        throw new Error('the router took no submit after the status came back');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const queued = await mesh.status.listTasks({ filter: { pipeline: 'idle' }, pageSize: 100 });
    expect(queued.tasks).toHaveLength(5);
  });

  it('never creates a task whose caller gave up before its create reached the status service', async () => {
    mesh = new ProcessMesh();
    await mesh.startStatus();
    const status = mesh.procs[0]!;
    await mesh.savePipeline(linear('idle', ['waits']));
    const router = await mesh.startRouter();
    const submit = submitter(router.address);
    const first = await submit(10_000);

    // The status service is gone: creates wait in the router, unsent, until their callers give up.
    status.kill('SIGKILL');
    await status.exited;
    const abandoned = await Promise.allSettled([submit(800), submit(800), submit(800)]);
    for (const r of abandoned)
      expect(r).toMatchObject({ reason: { code: Status.DEADLINE_EXCEEDED } });

    await mesh.restartStatus();
    let second: { taskId: string } | undefined;
    const until = Date.now() + 20_000;
    while (!second) {
      second = await submit(5_000).catch(() => undefined);
      if (Date.now() > until)
        throw new Error('the router took no submit after the status came back');
    }
    // Only the two tasks whose callers were answered exist.
    const tasks = await mesh.status.listTasks({ filter: { pipeline: 'idle' }, pageSize: 100 });
    expect(tasks.tasks.map((t) => t.taskId).sort()).toEqual([first.taskId, second.taskId].sort());
  });
});
