import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';

/** The three stages of the peers' workload, each served by its own worker process. */
export const PIPELINE3: Pipeline = {
  name: 'pipeline3',
  version: 0,
  description: 'The peers benchmark workload: parse, sha256, upper-case.',
  entryStage: 'stage1',
  maxHops: 0,
  createdAt: undefined,
  stages: ['stage1', 'stage2', 'stage3'].map((name, i, all) => ({
    name,
    next: i + 1 < all.length ? [all[i + 1]!] : [],
    queueTimeout: undefined,
    runTimeout: { seconds: 60, nanos: 0 },
    heartbeatTimeout: undefined,
    asyncTimeout: undefined,
    maxAttempts: 3,
    backoff: undefined,
    nonRetryableErrors: [],
    concurrency: 0,
    decorators: [],
  })),
};
