import path from 'node:path';
import { Status } from 'nice-grpc-common';
import { BadRequest, RichClientError } from 'nice-grpc-error-details';
import { WorkerPhase, WorkerServiceDefinition } from '../../../gen/dsat/worker/v1/worker';
import type { Duration } from '../../../gen/google/protobuf/duration';
import { loadConfig, workerConfigSpec } from '../../../services/shared/config';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import type { WorkerHandle } from '../../../services/worker/server';
import { startWorkerServer } from '../../../services/worker/server';
import type { RouterMesh } from '../../helpers/router-mesh';
import { eventually, linear, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

const SLEEPY = path.join(__dirname, '../../fixtures/handlers/sleepy.ts');

describe('DrainWorker checks its wait before it drains anything', () => {
  let mesh: RouterMesh;
  let worker: WorkerHandle;
  beforeAll(async () => {
    mesh = await startRouterMesh();
    await mesh.savePipeline(linear('sleepy', ['work']));
    worker = await startWorkerServer(
      loadConfig(
        workerConfigSpec,
        {
          port: '0',
          routers: mesh.router.address,
          trackerAddress: '127.0.0.1:1',
          handler: SLEEPY,
          stages: 'work',
          shutdownGrace: '1000',
        },
        {},
      ),
      { logger: silent },
    );
  });
  afterAll(async () => {
    await worker.shutdown();
    await mesh.stop();
  });

  const workers = () => mesh.router.dispatcher.load().find((s) => s.stage === 'work')?.workers ?? 0;

  it.each([
    ['a negative wait', { seconds: -5, nanos: 0 }, 'must not be negative'],
    ['a wait of a billion seconds', { seconds: 1e9, nanos: 0 }, 'at most 1h'],
    ['a wait just over an hour', { seconds: 3600, nanos: 1_000_000 }, 'at most 1h'],
    ['nanos of the other sign', { seconds: 5, nanos: -1 }, 'not a valid duration'],
  ] as const)(
    'refuses %s with INVALID_ARGUMENT naming wait',
    async (_what, wait: Duration, words) => {
      await eventually(() => workers() === 1, 10_000, 'the worker connected');
      const client = createDsatClient(WorkerServiceDefinition, createDsatChannel(worker.address));
      const err = (await client.drainWorker({ wait }).catch((e: unknown) => e)) as RichClientError;
      expect(err).toBeInstanceOf(RichClientError);
      expect(err.code).toBe(Status.INVALID_ARGUMENT);
      expect(err.details).toContain(words);
      const bad = err.extra.find((d) => d.$type === BadRequest.$type) as BadRequest;
      expect(bad.fieldViolations.map((v) => v.field)).toEqual(['wait']);
      // Nothing drained: the worker runs on, still connected to its router.
      expect((await client.getWorkerInfo({})).phase).toBe(WorkerPhase.WORKER_PHASE_RUNNING);
      expect(workers()).toBe(1);
    },
  );

  it('drains on a valid wait, waiting for it', async () => {
    const client = createDsatClient(WorkerServiceDefinition, createDsatChannel(worker.address));
    const res = await client.drainWorker({ wait: { seconds: 5, nanos: 0 } });
    expect(res).toEqual({ inFlight: 0, phase: WorkerPhase.WORKER_PHASE_STOPPED });
    await eventually(() => workers() === 0, 5_000, 'the worker gone');
  });
});
