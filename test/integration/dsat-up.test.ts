import { createClient } from '../../sdk/client';
import { healthCheck, listServices } from '../helpers/plain-grpc';
import { spawnDsat, UP_FREE_PORTS, upAddress, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(60_000);

const SERVICES = {
  status: 'dsat.status.v1.StatusService',
  router: 'dsat.router.v1.RouterService',
  tracker: 'dsat.tracker.v1.TrackerService',
  worker: 'dsat.worker.v1.WorkerService',
} as const;

describe('dsat up', () => {
  const data = tempDir();
  afterAll(() => data.cleanup());

  it('starts four servers that answer health and reflection, and stops on Ctrl-C with exit 0', async () => {
    const up = spawnDsat(['up', '--data-dir', data.path, ...UP_FREE_PORTS]);
    try {
      await up.waitForLine(/^dsat is up/);
      for (const [name, fullName] of Object.entries(SERVICES)) {
        const address = upAddress(up, name);
        expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
        await expect(healthCheck(address)).resolves.toBe('SERVING');
        await expect(healthCheck(address, fullName)).resolves.toBe('SERVING');
        const listed = await listServices(address);
        expect(listed).toContain(fullName);
      }
      // A task first, so the router's streams to the status service are open at Ctrl-C: they
      // end with the status service's, not after its 5 s grace, and nothing retries meanwhile.
      const client = createClient({
        router: upAddress(up, 'router'),
        status: upAddress(up, 'status'),
      });
      const { taskId } = await client.submit('demo', { text: 'hi' });
      await expect(client.result(taskId, { timeoutMs: 20_000 })).resolves.toMatchObject({
        text: 'HI',
      });
      client.close();
      const started = Date.now();
      up.kill('SIGINT');
      const code = await within(up.exited, 10_000, 'shutdown after SIGINT');
      expect(code).toBe(0);
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(up.stderr.filter((l) => /feed broke|grace period over/.test(l))).toEqual([]);
    } finally {
      up.kill('SIGKILL');
    }
  });

  it('with --no-demo, applies no pipeline and suggests applying one', async () => {
    const up = spawnDsat([
      'up',
      '--no-demo',
      '--no-trace-receiver',
      '--data-dir',
      data.path,
      ...UP_FREE_PORTS,
    ]);
    try {
      await up.waitForLine(/^dsat is up/);
      await up.waitForLine(/--help/);
      const out = up.stdout.join('\n');
      expect(out).not.toMatch(/demo/);
      expect(out).toMatch(/dsat pipelines apply my-pipeline\.yaml/);
      up.kill('SIGINT');
      expect(await within(up.exited, 10_000, 'shutdown after SIGINT')).toBe(0);
    } finally {
      up.kill('SIGKILL');
    }
  });
});
