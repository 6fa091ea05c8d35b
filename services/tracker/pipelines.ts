import { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import { invalidArgument, notFound } from '../shared/errors';
import { checkPageToken } from '../shared/page-token';
import type { PipelineCatalog, PipelineStore } from './pipeline-catalog';
import { assertValidPipeline } from '../shared/pipeline-validation';

export interface AppliedPipeline {
  readonly pipeline: Pipeline;
  /** False when it equalled the latest version (nothing stored), and always for validate-only. */
  readonly changed: boolean;
}

export interface Pipelines {
  /** Validates (INVALID_ARGUMENT listing every problem), then stores a new version if it changed. */
  applyPipeline(pipeline: Pipeline | undefined, validateOnly: boolean): Promise<AppliedPipeline>;
  get(name: string, version: number): Promise<Pipeline>;
  list(
    pageSize: number,
    pageToken: string,
  ): Promise<{ pipelines: Pipeline[]; nextPageToken: string }>;
}

/** What a caller may not set: the store assigns the version and the creation time. */
function normalized(p: Pipeline): Pipeline {
  return Pipeline.fromPartial({ ...p, version: 0, createdAt: undefined });
}

function sameDefinition(a: Pipeline, b: Pipeline): boolean {
  return Buffer.from(Pipeline.encode(normalized(a)).finish()).equals(
    Buffer.from(Pipeline.encode(normalized(b)).finish()),
  );
}

/** Applying, reading and listing pipelines: validation here, versions kept by the store. */
export function createPipelines(store: PipelineStore, catalog: PipelineCatalog): Pipelines {
  return {
    async applyPipeline(pipeline, validateOnly) {
      if (pipeline === undefined) throw invalidArgument('pipeline', 'is required');
      const p = normalized(pipeline);
      assertValidPipeline(p);
      if (validateOnly) {
        const latest = await store.get(p.name, 0);
        return { pipeline: latest && sameDefinition(latest, p) ? latest : p, changed: false };
      }
      const saved = await store.save(p);
      catalog.remember(saved.pipeline, true);
      return saved;
    },
    async get(name, version) {
      if (name === '') throw invalidArgument('name', 'is required');
      const p = await store.get(name, version);
      if (p === undefined) {
        throw notFound('pipeline', version === 0 ? name : `${name} v${version}`, 'name');
      }
      return p;
    },
    list: async (pageSize, pageToken) => store.list(pageSize, checkPageToken(pageToken)),
  };
}
