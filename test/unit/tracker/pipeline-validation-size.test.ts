import { Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import { DsatError } from '../../../services/shared/errors';
import {
  assertValidPipeline,
  validatePipeline,
} from '../../../services/shared/pipeline-validation';

/** s0 → s1 → … → s(n-1), and back to s0 when `closed`. */
function chain(n: number, closed = false): Pipeline {
  return Pipeline.fromPartial({
    name: 'long',
    stages: Array.from({ length: n }, (_, i) => ({
      name: `s${i}`,
      next: i + 1 < n ? [`s${i + 1}`] : closed ? ['s0'] : [],
    })),
  });
}

function refusal(p: Pipeline): DsatError {
  try {
    assertValidPipeline(p);
  } catch (err) {
    expect(err).toBeInstanceOf(DsatError);
    return err as DsatError;
  }
  throw new Error('the pipeline was accepted');
}

describe('pipeline validation of huge pipelines', () => {
  it.each([4_000, 100_000])('walks a chain of %i stages without running out of stack', (n) => {
    expect(validatePipeline(chain(n)).map((v) => v.field)).toEqual([
      'pipeline.stages',
      'pipeline.max_hops',
    ]);
  });

  it('finds the longest path of a deep chain within the stage limit', () => {
    const p = chain(1_000);
    expect(validatePipeline(Pipeline.fromPartial({ ...p, maxHops: 1_000 }))).toEqual([]);
    expect(validatePipeline(Pipeline.fromPartial({ ...p, maxHops: 999 }))).toEqual([
      {
        field: 'pipeline.max_hops',
        description:
          '999 is less than the 1000 stages of the longest path, which would always fail with HOP_LIMIT',
      },
    ]);
  });

  it('names a long cycle by its ends', () => {
    const cycle = validatePipeline(chain(50_000, true)).find((v) =>
      v.description.includes('cycle'),
    );
    expect(cycle?.field).toBe('pipeline.stages[49999].next[0]');
    expect(cycle?.description).toBe(
      'stage "s49999" → "s0" closes a cycle: s0 → s1 → s2 → s3 → s4 → … 49990 more … → s49995 → s49996 → s49997 → s49998 → s49999 → s0',
    );
  });

  it('lists the first 50 of many problems, and cuts a huge name in the description', () => {
    const p = Pipeline.fromPartial({
      name: 'x'.repeat(100_000),
      stages: Array.from({ length: 5_000 }, (_, i) => ({ name: `Bad ${i}` })),
    });
    const e = refusal(p);
    expect(e.violations).toHaveLength(50);
    expect(e.message).toMatch(/^\d+ problems, the first 50:\n/);
    expect(e.message.length).toBeLessThan(10_000);
    expect(e.violations[0]?.description).toContain(`"${'x'.repeat(80)}…" is longer than 63`);
  });
});
