import { trace } from '@opentelemetry/api';
import { processSpanHooks } from '../../../sdk/process-span';
import { startTestTracing } from '../../helpers/trace-checker';

describe('the worker process span', () => {
  const tracing = startTestTracing('dsat-worker-test');
  afterAll(() => tracing.telemetry.shutdown());

  const facts = (abortReason: string | undefined) => ({
    taskId: `t-${abortReason ?? 'ok'}`,
    stage: 'parse',
    attempt: 2,
    pipeline: 'demo',
    parentTaskId: abortReason === undefined ? '' : 'the-parent',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    abortReason,
    span: undefined,
  });

  it('is OK for an attempt that ran to its end, and ATTEMPT_ABORTED with the reason for one taken away', async () => {
    const hooks = processSpanHooks(() => 'w-1');
    await expect(hooks.aroundTask(facts(undefined), () => Promise.resolve('out'))).resolves.toBe(
      'out',
    );
    await hooks.aroundTask(facts('LEASE_LOST'), () => Promise.resolve('late'));
    // The span processor exports after the span ends, on a later turn.
    for (let i = 0; i < 200 && tracing.spans().length < 2; i++)
      await new Promise((r) => setTimeout(r, 10));
    const byTask = new Map(tracing.spans().map((s) => [s.attributes['dsat.task_id'], s]));
    expect(byTask.get('t-ok')).toMatchObject({
      name: 'dsat.process parse',
      traceId: '0af7651916cd43dd8448eb211c80319c',
      parentSpanId: 'b7ad6b7169203331',
      statusCode: 1,
    });
    expect(byTask.get('t-LEASE_LOST')).toMatchObject({
      statusCode: 2,
      statusMessage: 'LEASE_LOST',
      attributes: expect.objectContaining({
        'error.type': 'ATTEMPT_ABORTED',
        'dsat.attempt': 2,
        'dsat.parent_task_id': 'the-parent',
      }),
    });
    expect(byTask.get('t-ok')?.attributes).not.toHaveProperty('dsat.parent_task_id');
  });

  it("ends a synchronous handler's span before returning its value, and its throw as the span's error", async () => {
    const hooks = processSpanHooks(() => 'w-1');
    const ctx = { ...facts(undefined), taskId: 't-sync' };
    let active: unknown;
    const out = hooks.aroundTask(ctx, () => {
      active = trace.getActiveSpan();
      return 'now';
    });
    // A plain value, not a promise: the worker reports it with no microtask.
    expect(out).toBe('now');
    expect(active).toBe(ctx.span);
    const thrown = new Error('handler threw');
    expect(() =>
      hooks.aroundTask({ ...facts(undefined), taskId: 't-throw' }, () => {
        throw thrown;
      }),
    ).toThrow(thrown);
    for (let i = 0; i < 200 && tracing.spans().length < 4; i++)
      await new Promise((r) => setTimeout(r, 10));
    const byTask = new Map(tracing.spans().map((s) => [s.attributes['dsat.task_id'], s]));
    expect(byTask.get('t-sync')).toMatchObject({ name: 'dsat.process parse', statusCode: 1 });
    expect(byTask.get('t-throw')).toMatchObject({ statusCode: 2, statusMessage: 'handler threw' });
  });
});
