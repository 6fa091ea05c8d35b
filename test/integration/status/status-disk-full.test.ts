import crypto from 'node:crypto';
import path from 'node:path';
import { Status } from 'nice-grpc-common';
import { StatusServiceDefinition } from '../../../gen/dsat/status/v1/status';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import type { RunningProcess } from '../../helpers/processes';
import { spawnDsat, startDsatUp, within } from '../../helpers/processes';
import { createClient } from '../../../sdk/client';
import type { SmallDisk } from '../../helpers/small-disk';
import { mountSmallDisk, smallDiskUnavailable } from '../../helpers/small-disk';
import { createWrite, DEMO_PIPELINE } from '../../helpers/status-writes';

jest.setTimeout(120_000);

const unavailable = smallDiskUnavailable();
const describeDisk = unavailable === undefined ? describe : describe.skip;
if (unavailable !== undefined) console.warn(`disk-full tests skipped: ${unavailable}`);

/** A payload big enough that a 2 MiB disk fills after a dozen tasks. */
const PAYLOAD_BYTES = 96 * 1024;

function payloadOf(taskId: string): Buffer {
  // Random bytes: LevelDB's compression gains nothing on them, so the disk fills for real.
  const seed = crypto.createHash('sha256').update(taskId).digest();
  const out = Buffer.alloc(PAYLOAD_BYTES);
  for (let i = 0; i < out.length; i += seed.length) {
    crypto.createHash('sha256').update(seed).update(String(i)).digest().copy(out, i);
  }
  return out;
}

const createBigWrite = (taskId: string) =>
  createWrite(taskId, { data: payloadOf(taskId), contentType: 'application/octet-stream' });

function startStatus(dir: string): RunningProcess {
  return spawnDsat(['status', '--port', '0', '--data-dir', dir, '--log-level', 'warn']);
}

async function listening(p: RunningProcess): Promise<string> {
  return (await p.waitForLine(/^status listening on (\S+)$/))[1]!;
}

function clientOf(address: string) {
  // No retry: the refusal itself is what the test reads.
  return createDsatClient(StatusServiceDefinition, createDsatChannel(address), {
    retryMaxAttempts: 0,
  });
}
type Client = ReturnType<typeof clientOf>;

/**
 * Creates tasks through the write stream (as routers write), four messages unanswered at a time,
 * until the store refuses; the ids it acknowledged, and the refusal.
 */
async function fillUp(client: Client): Promise<{ acked: string[]; refusal: unknown }> {
  const acked: string[] = [];
  const sent: string[] = [];
  let unanswered = 0;
  let wake: (() => void) | undefined;
  async function* requests() {
    for (let i = 0; i < 1_000; i++) {
      while (unanswered >= 4) await new Promise<void>((resolve) => (wake = resolve));
      const id = crypto.randomUUID();
      sent.push(id);
      unanswered++;
      yield { writes: [createBigWrite(id)] };
    }
  }
  try {
    let answered = 0;
    for await (const res of client.applyTransitions(requests())) {
      if (res.outcomes[0]?.code === 0) acked.push(sent[answered]!);
      answered++;
      unanswered--;
      wake?.();
    }
  } catch (err) {
    return { acked, refusal: err };
  }
  throw new Error('the disk never filled up');
}

async function expectAllPresent(client: Client, ids: readonly string[]) {
  for (const id of ids) {
    const { task } = await client.getTask({ taskId: id });
    expect(task?.state).toBe(TaskState.TASK_STATE_QUEUED);
    expect(Buffer.from(task?.input?.data ?? []).equals(payloadOf(id))).toBe(true);
  }
}

describeDisk('the status service on a disk that fills up', () => {
  let disk: SmallDisk | undefined;
  const procs: RunningProcess[] = [];
  afterEach(async () => {
    const running = procs.splice(0);
    for (const p of running) p.kill('SIGKILL');
    await Promise.all(running.map((p) => p.exited));
    await disk?.cleanup();
    disk = undefined;
  });

  it('refuses the write that finds the disk full, naming why, stops, and once there is room again keeps every acknowledged write, those after the restart too, across kill -9', async () => {
    disk = await mountSmallDisk(2);
    const dir = path.join(disk.path, 'store');

    const first = startStatus(dir);
    procs.push(first);
    const client = clientOf(await listening(first));
    await client.savePipeline({ pipeline: DEMO_PIPELINE });
    const { acked, refusal } = await fillUp(client);
    expect(acked.length).toBeGreaterThan(3);
    expect(refusal).toMatchObject({ code: Status.UNAVAILABLE });
    expect(String((refusal as Error).message)).toMatch(/No space left on device/);

    // It stops by itself, non-zero, saying why: writing on after a failed write could lose
    // acknowledged ones at the next recovery.
    expect(await within(first.exited, 30_000, 'the status service to stop')).toBe(1);
    expect(first.stderr.join('\n')).toMatch(/failed a write.*No space left on device/);
    // Stopped, not crashed: the stream's answers queued behind the refused one were not left
    // unhandled (that killed the process with a stack trace before).
    expect(first.stderr.join('\n')).not.toMatch(/^Node\.js v|UnhandledPromiseRejection/m);

    // Still full: a restart cannot recover yet, and says why.
    const tooSoon = startStatus(dir);
    procs.push(tooSoon);
    expect(await within(tooSoon.exited, 30_000, 'the restart on a full disk to fail')).toBe(1);
    expect(tooSoon.stderr.join('\n')).toMatch(/cannot open status store.*No space left on device/);

    // Room again: a restart recovers, with every acknowledged task and its payload.
    await disk.grow(64);
    const second = startStatus(dir);
    procs.push(second);
    const again = clientOf(await listening(second));
    await expectAllPresent(again, acked);
    const later = Array.from({ length: 20 }, () => crypto.randomUUID());
    for (const id of later) await again.commitTransitions({ writes: [createBigWrite(id)] });

    // The writes acknowledged after the episode survive a crash as well.
    second.kill('SIGKILL');
    await second.exited;
    const third = startStatus(dir);
    procs.push(third);
    await expectAllPresent(clientOf(await listening(third)), [...acked, ...later]);
  });

  it('dsat up stops the whole mesh promptly, exit 1, with the cause as its last line', async () => {
    disk = await mountSmallDisk(2);
    const { up, env } = await startDsatUp(path.join(disk.path, 'store'));
    procs.push(up);
    const client = createClient({
      router: env.DSAT_ROUTER_ADDRESS,
      status: env.DSAT_STATUS_ADDRESS,
    });
    let refusal: unknown;
    for (let i = 0; i < 200 && refusal === undefined; i++) {
      await client.submit('demo', payloadOf(String(i))).catch((err: unknown) => (refusal = err));
    }
    const refusedAt = performance.now();
    // What the client reads last may be the mesh going away (it retries UNAVAILABLE), not the cause.
    expect(refusal).toBeInstanceOf(Error);
    // The worker does not wait out its 30 s drain: no result could be recorded.
    expect(await within(up.exited, 20_000, 'dsat up to stop')).toBe(1);
    expect(performance.now() - refusedAt).toBeLessThan(20_000);
    expect(up.stderr.filter((l) => !l.startsWith('{')).pop()).toMatch(
      /^dsat: the status store at .* failed a write \(.*No space left on device\)/,
    );
    client.close();
  });
});
