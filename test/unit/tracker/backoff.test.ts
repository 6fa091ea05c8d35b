import { backoffBaseMs, backoffDelayMs, backoffRangeMs } from '../../../services/tracker/backoff';
import type { BackoffPolicy } from '../../../services/tracker/stage-policy';
import { DEFAULT_BACKOFF, backoffPolicy } from '../../../services/tracker/stage-policy';
import { parsePipelineText } from '../../../services/tracker/pipeline-file';

describe('retry backoff', () => {
  it('defaults to initial 1 s, max 60 s, multiplier 2, jitter 0.2', () => {
    expect(DEFAULT_BACKOFF).toEqual({
      initialMs: 1_000,
      maxMs: 60_000,
      multiplier: 2,
      jitter: 0.2,
    });
    const stage = parsePipelineText('name: p\nstages: [{name: s}]').stages[0]!;
    expect(backoffPolicy(stage)).toEqual(DEFAULT_BACKOFF);
  });

  it('grows exponentially from initial and stops at max', () => {
    const bases = [1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffBaseMs(DEFAULT_BACKOFF, a));
    expect(bases).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    expect(backoffBaseMs(DEFAULT_BACKOFF, 10_000)).toBe(60_000);
  });

  it('stays within base × (1 ± jitter), reaching both ends', () => {
    const policy: BackoffPolicy = { initialMs: 500, maxMs: 8_000, multiplier: 3, jitter: 0.25 };
    for (const attempt of [1, 2, 3, 4, 9]) {
      const { min, max } = backoffRangeMs(policy, attempt);
      const base = backoffBaseMs(policy, attempt);
      expect(min).toBeCloseTo(base * 0.75);
      expect(max).toBeCloseTo(base * 1.25);
      expect(backoffDelayMs(policy, attempt, () => 0)).toBeCloseTo(min);
      expect(backoffDelayMs(policy, attempt, () => 0.999_999)).toBeCloseTo(max, 0);
      expect(backoffDelayMs(policy, attempt, () => 0.5)).toBeCloseTo(base);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelayMs(policy, attempt);
        expect(d).toBeGreaterThanOrEqual(min);
        expect(d).toBeLessThanOrEqual(max);
      }
    }
  });

  it('reads a stage backoff, with 0 meaning the default', () => {
    const stage = parsePipelineText(
      'name: p\nstages: [{name: s, backoff: {initial: 250ms, max: 0, multiplier: 0, jitter: 0.5}}]',
    ).stages[0]!;
    expect(backoffPolicy(stage)).toEqual({
      initialMs: 250,
      maxMs: 60_000,
      multiplier: 2,
      jitter: 0.5,
    });
  });
});
