import { TaskState } from '../../../gen/dsat/task/v1/task';
import { createClient } from '../../../sdk/client';
import { createWorker } from '../../../sdk/worker';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

describe('a 3-stage pipeline in one process', () => {
  let mesh: RouterMesh;
  afterEach(async () => mesh?.stop());

  it('runs every task through the three stages once', async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('p3', ['s1', 's2', 's3']));
    const worker = createWorker({
      routers: [mesh.router.address],
      concurrency: 16,
      logger: silent,
      handlers: {
        s1: (x) => ({ ...(x as object), s1: true }),
        s2: (x) => ({ ...(x as object), s2: true }),
        s3: (x) => ({ ...(x as object), s3: true }),
      },
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    try {
      await worker.connected();
      const ids = await Promise.all(
        Array.from({ length: 50 }, (_, i) => client.submit('p3', { i }).then((r) => r.taskId)),
      );
      const outputs = await Promise.all(ids.map((id) => client.result(id, { timeoutMs: 20_000 })));
      outputs.forEach((o, i) => expect(o).toEqual({ i, s1: true, s2: true, s3: true }));
      for (const id of ids)
        expect((await mesh.task(id)).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
      await eventually(() => worker.info().completed === 150, 5_000, 'acks');
    } finally {
      client.close();
      await worker.stop();
    }
  });
});
