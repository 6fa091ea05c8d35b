import type { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { systemClock } from '../../../services/tracker/monotonic-clock';
import { createPipelineCatalog } from '../../../services/tracker/pipeline-catalog';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';
import { defaultStagePolicy } from '../../../services/tracker/stage-policy';

const versionOf = (text: string, version: number): Pipeline => ({
  ...parsePipelineText(text),
  version,
});
const JOBS = [
  versionOf('name: jobs\nstages: [{name: work, run_timeout: 5s}]', 1),
  versionOf('name: jobs\nstages: [{name: work, run_timeout: 9s}]', 2),
];

describe('the pipeline catalog', () => {
  function setup() {
    const reads: string[] = [];
    const catalog = createPipelineCatalog({
      clock: systemClock,
      store: {
        async get(name, version) {
          reads.push(`${name}@${version}`);
          if (name !== 'jobs') return undefined;
          return version === 0 ? JOBS.at(-1) : JOBS.find((p) => p.version === version);
        },
      },
    });
    return { catalog, reads };
  }

  it('reads each pipeline version a batch lacks once, and never again, found or not', async () => {
    const { catalog, reads } = setup();
    const refs = [
      { name: 'jobs', version: 1 },
      { name: 'jobs', version: 1 },
      { name: 'jobs', version: 2 },
      { name: 'gone', version: 4 },
      { name: '', version: 0 },
      { name: 'gone', version: 4 },
    ];
    await catalog.ensure(refs);
    expect(reads.sort()).toEqual(['gone@4', 'jobs@1', 'jobs@2']);
    await catalog.ensure(refs);
    expect(reads).toHaveLength(3);
  });

  it('gives each version its own stage policies, the latest for version 0, defaults when unknown', async () => {
    const { catalog } = setup();
    await catalog.ensure([
      { name: 'jobs', version: 1 },
      { name: 'jobs', version: 0 },
      { name: 'gone', version: 4 },
    ]);
    expect(catalog.policy('jobs', 1, 'work').runTimeoutMs).toBe(5_000);
    expect(catalog.policy('jobs', 2, 'work').runTimeoutMs).toBe(9_000);
    expect(catalog.policy('jobs', 0, 'work').runTimeoutMs).toBe(9_000);
    expect(catalog.latestVersion('jobs')).toBe(2);
    expect(catalog.policy('jobs', 1, 'other')).toEqual(defaultStagePolicy('other'));
    expect(catalog.policy('gone', 4, 'work')).toEqual(defaultStagePolicy('work'));
    expect(catalog.policy('never', 1, 'work')).toEqual(defaultStagePolicy('work'));
  });
});
