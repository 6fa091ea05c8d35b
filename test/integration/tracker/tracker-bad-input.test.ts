import { Status } from 'nice-grpc-common';
import { refusal, violatedFields } from '../../helpers/refusal';
import type { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { loadConfig, statusConfigSpec, trackerConfigSpec } from '../../../services/shared/config';
import { createLogger } from '../../../services/shared/logger';
import type { ServiceHandle } from '../../../services/shared/service-host';
import { startStatusServer } from '../../../services/status/server';
import type { TrackerHandle } from '../../../services/tracker/server';
import { startTrackerServer } from '../../../services/tracker/server';
import type { TrackerClient } from '../../helpers/mesh-harness';
import { trackerClient } from '../../helpers/mesh-harness';
import { linear, pipeline } from '../../helpers/router-mesh';
import { tempDir } from '../../helpers/temp-dir';

jest.setTimeout(60_000);
const logger = createLogger('test', 'silent');

/** A chain s0 → s1 → … of `n` stages, built without the helpers' per-stage objects. */
function chain(n: number): Pipeline {
  return linear(
    'long',
    Array.from({ length: n }, (_, i) => `s${i}`),
  );
}

describe('the tracker refuses bad input with the field, never INTERNAL', () => {
  const dir = tempDir();
  let status: ServiceHandle;
  let tracker: TrackerHandle;
  let client: TrackerClient;

  beforeAll(async () => {
    status = await startStatusServer(
      loadConfig(statusConfigSpec, { port: '0', dataDir: dir.path }, {}),
      { logger },
    );
    tracker = await startTrackerServer(
      loadConfig(
        trackerConfigSpec,
        { port: '0', statusAddress: status.address, shutdownGrace: '1s' },
        {},
      ),
      { logger },
    );
    client = trackerClient(tracker.address);
  });
  afterAll(async () => {
    await tracker.shutdown();
    await status.shutdown();
    dir.cleanup();
  });

  it.each([
    [
      'ListPipelines with a malformed page token',
      () => client.listPipelines({ pageToken: '!!' }),
      'page_token',
    ],
    [
      'ListDeadLettered with a malformed page token',
      () => client.listDeadLettered({ pageToken: '!!' }),
      'page_token',
    ],
    [
      'RedriveTasks with a malformed task id',
      () => client.redriveTasks({ taskIds: ['bad id!'] }),
      'task_ids[0]',
    ],
    [
      'RedriveTasks with a malformed action key',
      () =>
        client.redriveTasks({ filter: { states: [], pipeline: '', stage: '', actionKey: 'x' } }),
      'filter.action_key',
    ],
    [
      'PurgeTasks with a malformed task id',
      () => client.purgeTasks({ taskIds: ['ok', 'bad id!'] }),
      'task_ids[1]',
    ],
    [
      'PurgeTasks with a malformed action key',
      () => client.purgeTasks({ filter: { states: [], pipeline: '', stage: '', actionKey: 'x' } }),
      'filter.action_key',
    ],
  ] as const)('%s', async (_what, call, field) => {
    const err = await refusal(call());
    expect({ code: Status[err.code], details: err.details }).toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: expect.stringContaining(field),
    });
    expect(violatedFields(err)).toEqual([field]);
  });

  it("passes on the status service's refusal of a token of another list, with its details", async () => {
    // Well formed, so the tracker passes it on; only the status service knows it is no page of
    // pipelines. Its INVALID_ARGUMENT reaches the caller as it was, not as INTERNAL.
    const foreign = Buffer.from(JSON.stringify(['tasks', 'L', 5])).toString('base64url');
    const err = await refusal(client.listPipelines({ pageToken: foreign }));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.details).toContain('page_token');
    expect(violatedFields(err)).toEqual(['page_token']);
  });

  it.each([4_000, 100_000])(
    'refuses a chain of %i stages, validate_only or not, listing the stage limit',
    async (n) => {
      const pipeline = chain(n);
      for (const validateOnly of [true, false]) {
        const err = await refusal(client.applyPipeline({ pipeline, validateOnly }));
        expect(err.code).toBe(Status.INVALID_ARGUMENT);
        expect(err.details).toContain(`has ${n} stages; at most 1000 are allowed`);
        expect(violatedFields(err)).toContain('pipeline.stages');
      }
      await expect(client.getPipeline({ name: 'long', version: 0 })).rejects.toMatchObject({
        code: Status.NOT_FOUND,
      });
    },
  );

  it('answers INVALID_ARGUMENT for a pipeline with thousands of problems or a huge name', async () => {
    // Listing them all would overflow the response's trailers: the client would see UNAVAILABLE.
    const many = pipeline(
      'bad',
      Array.from({ length: 5_000 }, (_, i) => ({ name: `Bad ${i}` })),
    );
    const err = await refusal(client.applyPipeline({ pipeline: many, validateOnly: true }));
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/problems, the first 50:/);
    expect(violatedFields(err)).toHaveLength(50);
    const huge = pipeline('bad', [{ name: 'x'.repeat(200_000) }]);
    const named = await refusal(client.applyPipeline({ pipeline: huge, validateOnly: true }));
    expect(named.code).toBe(Status.INVALID_ARGUMENT);
    expect(violatedFields(named)).toEqual(['pipeline.stages[0].name']);
    const key = await refusal(
      client.purgeTasks({
        filter: { states: [], pipeline: '', stage: '', actionKey: 'k'.repeat(1_000_000) },
      }),
    );
    expect(key.code).toBe(Status.INVALID_ARGUMENT);
    expect(key.details.length).toBeLessThan(10_000);
  });
});
