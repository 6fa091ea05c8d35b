import fs from 'node:fs';
import path from 'node:path';
import type { RunningProcess } from '../helpers/processes';
import { spawnDsat, startDsatUp, stopDsatUp, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

async function dsat(args: string[], env: NodeJS.ProcessEnv) {
  const p = spawnDsat(args, env);
  const code = await within(p.exited, 60_000, `dsat ${args.join(' ')}`);
  return { code, out: p.stdout.join('\n'), err: p.stderr.join('\n') };
}

describe('a backlog that would outgrow memory', () => {
  const tmp = tempDir();
  let up: RunningProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    // Every unfinished task's payload is held in memory by the status service and its router.
    ({ up, env } = await startDsatUp(path.join(tmp.path, 'data'), ['--no-demo'], {
      DSAT_MAX_UNFINISHED_BYTES: '250KiB',
    }));
  });
  afterAll(async () => {
    await stopDsatUp(up);
    tmp.cleanup();
  });

  it('refuses submits past --max-unfinished-bytes with RESOURCE_EXHAUSTED naming the limit, and takes them again once tasks end', async () => {
    const pipeline = path.join(tmp.path, 'idle.yaml');
    fs.writeFileSync(pipeline, 'name: idle\nstages:\n  - name: waits\n');
    expect((await dsat(['pipelines', 'apply', pipeline], env)).code).toBe(0);
    const payload = path.join(tmp.path, 'payload.bin');
    fs.writeFileSync(payload, Buffer.alloc(100_000, 7));
    const submit = () =>
      dsat(['submit', 'idle', `@${payload}`, '--content-type', 'application/octet-stream'], env);

    // No worker serves the stage: the tasks wait, holding their payloads.
    const first = await submit();
    expect(first.code).toBe(0);
    expect((await submit()).code).toBe(0);
    const refused = await submit();
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/RESOURCE_EXHAUSTED/);
    expect(refused.err).toMatch(/take \d+ bytes of memory \(payloads, .*--max-unfinished-bytes/);

    const firstId = /submitted (\S+)/.exec(first.out)![1]!;
    expect((await dsat(['cancel', firstId], env)).code).toBe(0);
    expect((await submit()).code).toBe(0);
  });
});
