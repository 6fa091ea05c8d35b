import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type { Clock } from './monotonic-clock';
import type { StagePolicy } from './stage-policy';
import { defaultStagePolicy, pipelinePolicies } from './stage-policy';

/** Where pipelines are kept: the status service (`SavePipeline`, `GetPipeline`, `ListPipelines`). */
export interface PipelineStore {
  /** One version; 0 = the latest. Undefined when there is none. */
  get(name: string, version: number): Promise<Pipeline | undefined>;
  /** Stores a new version unless it equals the latest (then `changed` is false). */
  save(pipeline: Pipeline): Promise<{ pipeline: Pipeline; changed: boolean }>;
  list(
    pageSize: number,
    pageToken: string,
  ): Promise<{ pipelines: Pipeline[]; nextPageToken: string }>;
}

/** A pipeline version to have at hand; version 0 asks for the latest. */
export interface PipelineRef {
  readonly name: string;
  readonly version: number;
}

/**
 * The stage policies of every pipeline version the tracker's tasks pin. Versions never change once
 * stored, so they are cached for good; the latest version of a name is read again once it is
 * older than `latestTtlMs` (and at once when this tracker applies a new one). `policy` is
 * synchronous, so feed processing never waits per transition: `ensure` loads a batch's needs first.
 */
export interface PipelineCatalog {
  ensure(refs: Iterable<PipelineRef>): Promise<void>;
  /** The policy of a stage; the defaults when the pipeline or stage is unknown. */
  policy(name: string, version: number, stage: string): StagePolicy;
  /** The latest version known, 0 when there is none. */
  latestVersion(name: string): number;
  /** Caches a stored pipeline; `latest` when it is the newest version of its name. */
  remember(pipeline: Pipeline, latest: boolean): void;
}

export interface PipelineCatalogOptions {
  readonly store: Pick<PipelineStore, 'get'>;
  readonly clock: Clock;
  /** Default 2 s. */
  readonly latestTtlMs?: number;
}

export function createPipelineCatalog(options: PipelineCatalogOptions): PipelineCatalog {
  const { store, clock } = options;
  const ttl = options.latestTtlMs ?? 2_000;
  // By name, then version: `policy` runs for every feed transition, and a joined key was a new
  // string each time.
  const versions = new Map<string, Map<number, ReadonlyMap<string, StagePolicy> | null>>();
  const latest = new Map<string, { version: number; readAt: number }>();
  const setVersion = (
    name: string,
    version: number,
    policies: ReadonlyMap<string, StagePolicy> | null,
  ) => {
    let byVersion = versions.get(name);
    if (byVersion === undefined) versions.set(name, (byVersion = new Map()));
    byVersion.set(version, policies);
  };
  const known = (name: string, version: number) => versions.get(name)?.has(version) === true;

  const remember = (p: Pipeline, isLatest: boolean) => {
    setVersion(p.name, p.version, pipelinePolicies(p));
    if (isLatest) latest.set(p.name, { version: p.version, readAt: clock.monotonicMs() });
  };

  const load = async (ref: PipelineRef) => {
    const p = await store.get(ref.name, ref.version);
    if (ref.version === 0) {
      if (p === undefined) latest.set(ref.name, { version: 0, readAt: clock.monotonicMs() });
      else remember(p, true);
    } else if (p === undefined) {
      setVersion(ref.name, ref.version, null);
    } else {
      remember(p, false);
    }
  };

  return {
    async ensure(refs) {
      const wanted = new Map<string, PipelineRef>();
      const now = clock.monotonicMs();
      for (const ref of refs) {
        if (ref.name === '') continue;
        if (ref.version === 0) {
          const l = latest.get(ref.name);
          if (l !== undefined && now - l.readAt < ttl) continue;
        } else if (known(ref.name, ref.version)) continue;
        // Only refs still to load get a key: one per pipeline version a batch lacks.
        const k = `${ref.name}@${ref.version}`;
        if (!wanted.has(k)) wanted.set(k, ref);
      }
      if (wanted.size > 0) await Promise.all([...wanted.values()].map(load));
    },
    policy(name, version, stage) {
      const v = version === 0 ? (latest.get(name)?.version ?? 0) : version;
      return versions.get(name)?.get(v)?.get(stage) ?? defaultStagePolicy(stage);
    },
    latestVersion: (name) => latest.get(name)?.version ?? 0,
    remember,
  };
}
