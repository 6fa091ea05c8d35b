import { measurements, summarize } from '../../../bench/pipeline3/orchestrator';
import type { RunRecord } from '../../../bench/pipeline3/orchestrator';

describe("the benchmark's measurements", () => {
  it('measures T once and L once per rate, in the order the modes were given', () => {
    expect(measurements(['T', 'L'], [50, 1000])).toEqual([
      { mode: 'T' },
      { mode: 'L', rate: 50 },
      { mode: 'L', rate: 1000 },
    ]);
    expect(measurements(['L', 'T'], [200])).toEqual([{ mode: 'L', rate: 200 }, { mode: 'T' }]);
    expect(measurements(['T'], [50, 1000])).toEqual([{ mode: 'T' }]);
  });

  it("names an L summary's offered rate beside the rate it reached", () => {
    const run = (rep: number, achieved: number, p99: number): RunRecord => ({
      type: 'run',
      mode: 'L',
      rep,
      achieved_rate: achieved,
      latency: { p50_ms: 1, p90_ms: 2, p99_ms: p99, max_ms: 9 },
      lost: 0,
      dups: 0,
    });
    const s = summarize('dsat', { mode: 'L', rate: 200 }, [run(1, 199, 8), run(2, 200, 6)]);
    expect(s).toMatchObject({
      measurement: 'L',
      offered_rate: 200,
      achieved_rate: { median: 199.5, min: 199, max: 200, runs: 2 },
      p99_ms: { median: 7, min: 6, max: 8, runs: 2 },
      lost_total: 0,
    });
    expect(summarize('dsat', { mode: 'T' }, [])).not.toHaveProperty('offered_rate');
  });
});
