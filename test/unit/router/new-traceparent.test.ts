import { describe, expect, it } from '@jest/globals';
import { newTraceparent } from '../../../services/router/task-intake';
import { parseTraceparent } from '../../../services/shared/traceparent';

describe('newTraceparent', () => {
  it('gives every task its own valid, sampled traceparent, across refills of its random pool', () => {
    const made = Array.from({ length: 2000 }, () => newTraceparent());
    for (const tp of made) {
      expect(tp).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(parseTraceparent(tp)).toBeDefined();
    }
    expect(new Set(made.map((tp) => tp.slice(3, 35))).size).toBe(made.length);
    expect(new Set(made.map((tp) => tp.slice(36, 52))).size).toBe(made.length);
  });
});
