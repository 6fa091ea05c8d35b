import { describe, expect, it } from '@jest/globals';
import { context, createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { SynchronousContextManager } from '../../../services/shared/synchronous-context';
import { startTelemetry } from '../../../services/shared/telemetry';

const KEY = createContextKey('k');
const withValue = (v: string) => ROOT_CONTEXT.setValue(KEY, v);
const noProcessor = {
  onStart() {},
  onEnd() {},
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

describe('the synchronous context manager', () => {
  it('makes a context active while the callback runs, nested, and restores it even after a throw', () => {
    const m = new SynchronousContextManager();
    const seen: unknown[] = [];
    m.with(withValue('outer'), () => {
      seen.push(m.active().getValue(KEY));
      expect(() =>
        m.with(withValue('inner'), () => {
          seen.push(m.active().getValue(KEY));
          throw new Error('handler failed');
        }),
      ).toThrow('handler failed');
      seen.push(m.active().getValue(KEY));
    });
    expect(seen).toEqual(['outer', 'inner', 'outer']);
    expect(m.active()).toBe(ROOT_CONTEXT);
    const bound = m.bind(withValue('bound'), (n: number) => [n, m.active().getValue(KEY)]);
    expect(bound(7)).toEqual([7, 'bound']);
    const notAFunction = { a: 1 };
    expect(m.bind(withValue('x'), notAFunction)).toBe(notAFunction);
  });

  it('is what the router, status and tracker run with: a context does not follow an await', async () => {
    for (const acrossAwaits of [false, true]) {
      const telemetry = startTelemetry({
        serviceName: 'dsat-test',
        spanProcessors: [noProcessor],
        env: {},
        contextAcrossAwaits: acrossAwaits,
      });
      try {
        const after = await context.with(withValue('call'), async () => {
          await Promise.resolve();
          return context.active().getValue(KEY);
        });
        expect(after).toBe(acrossAwaits ? 'call' : undefined);
      } finally {
        await telemetry.shutdown();
        context.disable();
      }
    }
  });
});
