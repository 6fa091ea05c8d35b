import { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { DsatError } from '../../../services/shared/errors';
import { systemClock } from '../../../services/tracker/monotonic-clock';
import type { PipelineStore } from '../../../services/tracker/pipeline-catalog';
import { createPipelineCatalog } from '../../../services/tracker/pipeline-catalog';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import { createPipelines } from '../../../services/tracker/pipelines';

/** Versions kept per name; an unchanged pipeline is not stored again, as the status store does. */
function memoryStore(): PipelineStore & { saves: number } {
  const versions = new Map<string, Pipeline[]>();
  const same = (a: Pipeline, b: Pipeline) =>
    JSON.stringify(Pipeline.toJSON({ ...a, version: 0, createdAt: undefined })) ===
    JSON.stringify(Pipeline.toJSON({ ...b, version: 0, createdAt: undefined }));
  return {
    saves: 0,
    async get(name, version) {
      const list = versions.get(name) ?? [];
      return version === 0 ? list.at(-1) : list.find((p) => p.version === version);
    },
    async save(p) {
      this.saves += 1;
      const list = versions.get(p.name) ?? [];
      const latest = list.at(-1);
      if (latest && same(latest, p)) return { pipeline: latest, changed: false };
      const stored = { ...p, version: list.length + 1, createdAt: new Date() };
      versions.set(p.name, [...list, stored]);
      return { pipeline: stored, changed: true };
    },
    async list() {
      return { pipelines: [...versions.values()].map((l) => l.at(-1)!), nextPageToken: '' };
    },
  };
}

const V1 = parsePipelineText('name: jobs\nstages: [{name: work, run_timeout: 5s}]');
const V2 = parsePipelineText('name: jobs\nstages: [{name: work, run_timeout: 9s}]');

describe('applying pipelines', () => {
  function setup() {
    const store = memoryStore();
    const catalog = createPipelineCatalog({ store, clock: systemClock });
    return { store, catalog, pipelines: createPipelines(store, catalog) };
  }

  it('stores a new version only when the pipeline changed, and ignores a given version', async () => {
    const { pipelines } = setup();
    const first = await pipelines.applyPipeline({ ...V1, version: 7 }, false);
    expect(first).toMatchObject({ changed: true, pipeline: { name: 'jobs', version: 1 } });
    expect(await pipelines.applyPipeline(V1, false)).toMatchObject({
      changed: false,
      pipeline: { version: 1 },
    });
    expect(await pipelines.applyPipeline(V2, false)).toMatchObject({
      changed: true,
      pipeline: { version: 2 },
    });
    expect((await pipelines.get('jobs', 1)).stages[0]?.runTimeout).toEqual({
      seconds: 5,
      nanos: 0,
    });
    expect((await pipelines.get('jobs', 0)).version).toBe(2);
    expect((await pipelines.list(100, '')).pipelines.map((p) => p.version)).toEqual([2]);
  });

  it('tells the timers at once about the version it applied', async () => {
    const { pipelines, catalog } = setup();
    await pipelines.applyPipeline(V1, false);
    await pipelines.applyPipeline(V2, false);
    expect(catalog.latestVersion('jobs')).toBe(2);
    expect(catalog.policy('jobs', 2, 'work').runTimeoutMs).toBe(9_000);
  });

  it('validates only, storing nothing, when asked', async () => {
    const { pipelines, store } = setup();
    expect(await pipelines.applyPipeline(V1, true)).toMatchObject({
      changed: false,
      pipeline: { version: 0 },
    });
    expect(store.saves).toBe(0);
    await expect(pipelines.get('jobs', 0)).rejects.toMatchObject({ kind: 'NOT_FOUND' });
  });

  it('refuses an invalid pipeline with INVALID_ARGUMENT naming the element, storing nothing', async () => {
    const { pipelines, store } = setup();
    const bad = parsePipelineText('name: jobs\nstages: [{name: a, next: [b]}, {name: c}]');
    const err = (await pipelines.applyPipeline(bad, false).catch((e: unknown) => e)) as DsatError;
    expect(err).toBeInstanceOf(DsatError);
    expect(err.kind).toBe('INVALID_ARGUMENT');
    expect(err.violations.map((v) => v.field)).toEqual([
      'pipeline.stages[0].next[0]',
      'pipeline.stages[1]',
    ]);
    expect(store.saves).toBe(0);
    await expect(pipelines.applyPipeline(undefined, false)).rejects.toMatchObject({
      field: 'pipeline',
    });
  });

  it('answers NOT_FOUND for a missing pipeline or version', async () => {
    const { pipelines } = setup();
    await pipelines.applyPipeline(V1, false);
    await expect(pipelines.get('jobs', 3)).rejects.toMatchObject({
      kind: 'NOT_FOUND',
      message: expect.stringContaining('jobs v3'),
    });
    await expect(pipelines.get('', 0)).rejects.toMatchObject({
      kind: 'INVALID_ARGUMENT',
      field: 'name',
    });
  });
});
