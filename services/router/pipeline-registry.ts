import { Status } from 'nice-grpc-common';
import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import { Decorator } from '../../gen/dsat/pipeline/v1/pipeline';
import { durationMs } from '../shared/duration';
import { DsatError, notFound } from '../shared/errors';

import { DEFAULT_MAX_HOPS } from '../shared/pipeline-validation';
export const DEFAULT_MAX_ATTEMPTS = 3;

/** One stage as the router uses it: defaults applied, durations in milliseconds. */
export interface CompiledStage {
  readonly name: string;
  readonly next: readonly string[];
  readonly nextSet: ReadonlySet<string>;
  readonly maxAttempts: number;
  /** 0: no heartbeat timeout (no lease beyond the stream itself). */
  readonly heartbeatTimeoutMs: number;
  readonly runTimeoutMs: number;
  readonly publish: boolean;
  readonly async: boolean;
  readonly nonRetryable: ReadonlySet<string>;
  /** Most attempts of the stage running at once on this router's workers; Infinity: no limit. */
  readonly concurrency: number;
}

export interface CompiledPipeline {
  readonly name: string;
  readonly version: number;
  readonly entry: CompiledStage;
  readonly maxHops: number;
  readonly stages: ReadonlyMap<string, CompiledStage>;
}

/** Reads one stored pipeline version (0 = latest); rejects when it does not exist. */
export type FetchPipeline = (name: string, version: number) => Promise<Pipeline | undefined>;

export interface PipelineRegistry {
  /** The latest version, read again once `ttlMs` has passed. NOT_FOUND names field `pipeline`. */
  latest(name: string): Promise<CompiledPipeline>;
  /** A pinned version; versions never change, so they are cached for good. */
  version(name: string, version: number): Promise<CompiledPipeline>;
  /** A pinned version if it is cached already. */
  cached(name: string, version: number): CompiledPipeline | undefined;
}

export function compilePipeline(p: Pipeline): CompiledPipeline {
  const stages = new Map<string, CompiledStage>();
  for (const s of p.stages) {
    stages.set(s.name, {
      name: s.name,
      next: [...s.next],
      nextSet: new Set(s.next),
      maxAttempts: s.maxAttempts > 0 ? s.maxAttempts : DEFAULT_MAX_ATTEMPTS,
      heartbeatTimeoutMs: durationMs(s.heartbeatTimeout),
      runTimeoutMs: durationMs(s.runTimeout),
      publish: s.decorators.includes(Decorator.DECORATOR_PUBLISH),
      async: s.decorators.includes(Decorator.DECORATOR_ASYNC),
      nonRetryable: new Set(s.nonRetryableErrors),
      concurrency: s.concurrency > 0 ? s.concurrency : Number.POSITIVE_INFINITY,
    });
  }
  const entryName = p.entryStage !== '' ? p.entryStage : p.stages[0]?.name;
  const entry = entryName === undefined ? undefined : stages.get(entryName);
  if (entry === undefined) {
    throw new DsatError(
      'FAILED_PRECONDITION',
      'PIPELINE_INVALID',
      `pipeline ${p.name} v${p.version} has no entry stage`,
      { field: 'pipeline', metadata: { pipeline: p.name } },
    );
  }
  return {
    name: p.name,
    version: p.version,
    entry,
    maxHops: p.maxHops > 0 ? p.maxHops : DEFAULT_MAX_HOPS,
    stages,
  };
}

interface LatestEntry {
  pipeline: CompiledPipeline | undefined;
  fetchedAt: number;
  loading: Promise<CompiledPipeline> | undefined;
}

/**
 * How long a submit waits for the latest version to be read again before it takes the version it
 * has: a status service that is away must not hold every submit until its call's deadline.
 */
const STALE_FALLBACK_MS = 250;

/** The fresh read if it answers soon and well, else the version in hand. */
function orStale(
  fresh: Promise<CompiledPipeline>,
  stale: CompiledPipeline,
): Promise<CompiledPipeline> {
  let timer: NodeJS.Timeout | undefined;
  const fallback = new Promise<CompiledPipeline>((resolve) => {
    timer = setTimeout(() => resolve(stale), STALE_FALLBACK_MS);
  });
  return Promise.race([fresh.catch(() => stale), fallback]).finally(() => clearTimeout(timer));
}

export function createPipelineRegistry(
  fetch: FetchPipeline,
  options: { ttlMs: number; now?: () => number },
): PipelineRegistry {
  const now = options.now ?? (() => performance.now());
  const versions = new Map<string, CompiledPipeline>();
  const loadingVersions = new Map<string, Promise<CompiledPipeline>>();
  const latest = new Map<string, LatestEntry>();
  const key = (name: string, version: number) => `${name}@${version}`;

  async function load(name: string, version: number): Promise<CompiledPipeline> {
    let p: Pipeline | undefined;
    try {
      p = await fetch(name, version);
    } catch (err) {
      if ((err as { code?: unknown }).code === Status.NOT_FOUND) p = undefined;
      else
        throw new DsatError('UNAVAILABLE', 'STATUS_UNAVAILABLE', 'cannot read the pipeline', {
          cause: err,
          metadata: { pipeline: name },
        });
    }
    if (p === undefined || p.name === '') {
      if (version === 0) throw notFound('pipeline', name, 'pipeline');
      throw new DsatError(
        'NOT_FOUND',
        'PIPELINE_VERSION_NOT_FOUND',
        `pipeline ${JSON.stringify(name)} has no version ${version}`,
        { field: 'pipeline_version', metadata: { pipeline: name, version: String(version) } },
      );
    }
    const compiled = compilePipeline(p);
    versions.set(key(compiled.name, compiled.version), compiled);
    return compiled;
  }

  return {
    latest(name) {
      let e = latest.get(name);
      const t = now();
      const stale = e?.pipeline;
      if (stale !== undefined && t - e!.fetchedAt < options.ttlMs) return Promise.resolve(stale);
      if (e?.loading) return stale === undefined ? e.loading : orStale(e.loading, stale);
      if (e === undefined) {
        e = { pipeline: undefined, fetchedAt: 0, loading: undefined };
        latest.set(name, e);
      }
      const entry = e;
      entry.loading = load(name, 0).then(
        (p) => {
          entry.pipeline = p;
          entry.fetchedAt = now();
          entry.loading = undefined;
          return p;
        },
        (err: unknown) => {
          entry.loading = undefined;
          if (entry.pipeline === undefined) latest.delete(name);
          throw err;
        },
      );
      return stale === undefined ? entry.loading : orStale(entry.loading, stale);
    },
    version(name, version) {
      if (version === 0) return this.latest(name);
      const k = key(name, version);
      const hit = versions.get(k);
      if (hit) return Promise.resolve(hit);
      let loading = loadingVersions.get(k);
      if (!loading) {
        loading = load(name, version).finally(() => loadingVersions.delete(k));
        loadingVersions.set(k, loading);
      }
      return loading;
    },
    cached(name, version) {
      return versions.get(key(name, version));
    },
  };
}
