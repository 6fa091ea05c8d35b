import { isSpanContextValid, trace, type Span } from '@opentelemetry/api';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { processSpanHooks } from '../../../sdk/process-span';
import { taskTracingActive } from '../../../services/shared/task-tracing';

describe('task spans with no OpenTelemetry SDK registered', () => {
  afterEach(() => trace.disable());

  const facts = () => ({
    taskId: 't-1',
    stage: 'parse',
    attempt: 1,
    pipeline: 'demo',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    abortReason: undefined,
    span: undefined as unknown,
  });

  it('are skipped: the handler runs with a span that records nothing, its result or error passes through', async () => {
    expect(taskTracingActive()).toBe(false);
    const hooks = processSpanHooks(() => 'w-1');
    const ctx = facts();
    await expect(hooks.aroundTask(ctx as never, () => Promise.resolve('out'))).resolves.toBe('out');
    const span = ctx.span as Span;
    expect(span.isRecording()).toBe(false);
    expect(isSpanContextValid(span.spanContext())).toBe(false);
    await expect(
      hooks.aroundTask(facts() as never, () => Promise.reject(new Error('handler failed'))),
    ).rejects.toThrow('handler failed');
  });

  it('are made again as soon as an SDK registers, e.g. one a handler module starts itself', () => {
    expect(taskTracingActive()).toBe(false);
    trace.setGlobalTracerProvider(new BasicTracerProvider());
    expect(taskTracingActive()).toBe(true);
  });
});
