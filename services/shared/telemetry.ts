import type * as OtlpGrpc from '@opentelemetry/exporter-trace-otlp-grpc';
import type * as OtlpHttp from '@opentelemetry/exporter-trace-otlp-http';
import type * as SdkNode from '@opentelemetry/sdk-node';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type * as TraceBase from '@opentelemetry/sdk-trace-base';
import type * as SpanExport from './otlp-span-export';
import type * as TaskSpan from './task-span';
import { exportersFromEnv, otlpProtocol } from './otel-env';
import { SynchronousContextManager } from './synchronous-context';
import { dsatTracer, useTaskSpanMaker } from './task-tracing';

/*
 * The SDK and the exporters are loaded only when a process traces: loading them costs ~26 MB of
 * memory and ~0.25 s of CPU in each process, for nothing when tracing is off.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const load = {
  sdk: (): typeof SdkNode => require('@opentelemetry/sdk-node') as typeof SdkNode,
  base: (): typeof TraceBase => require('@opentelemetry/sdk-trace-base') as typeof TraceBase,
  http: (): typeof OtlpHttp =>
    require('@opentelemetry/exporter-trace-otlp-http') as typeof OtlpHttp,
  export: (): typeof SpanExport => require('./otlp-span-export') as typeof SpanExport,
  taskSpan: (): typeof TaskSpan => require('./task-span') as typeof TaskSpan,
  grpc: (): typeof OtlpGrpc =>
    require('@opentelemetry/exporter-trace-otlp-grpc') as typeof OtlpGrpc,
};
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * OpenTelemetry for a dsat process, configured only by the standard OTEL_* variables. Traces are
 * exported over OTLP when OTEL_TRACES_EXPORTER says `otlp` or an OTLP endpoint is set; with
 * neither (and no in-process span store), nothing is started and the API stays a no-op.
 */
export interface Telemetry {
  readonly enabled: boolean;
  /** Flushes and stops; the last step of every shutdown. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  /** service.name unless OTEL_SERVICE_NAME sets it. */
  readonly serviceName: string;
  /** Extra processors, e.g. the span store of `dsat up`. */
  readonly spanProcessors?: readonly SpanProcessor[];
  /**
   * Whether the active context follows awaits (AsyncLocalStorage, the default): needed where
   * user handlers run, so that their spans nest under their task's. The router, status and
   * tracker run without it (synchronous-context.ts says why).
   */
  readonly contextAcrossAwaits?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

/** The processor that exports over OTLP, or undefined when the OTEL_* variables ask for none. */
function otlpProcessorFromEnv(env: NodeJS.ProcessEnv): SpanProcessor | undefined {
  if (!exportersFromEnv(env, 'TRACES').includes('otlp')) return undefined;
  const protocol = otlpProtocol(env, 'TRACES');
  const batch = (exporter: SpanExporter) => new (load.base().BatchSpanProcessor)(exporter);
  if (protocol === 'grpc') return batch(new (load.grpc().OTLPTraceExporter)());
  if (protocol === 'http/json') return batch(new (load.http().OTLPTraceExporter)());
  // The default, http/protobuf: spans encoded as they end (otlp-span-export.ts).
  const { EncodingBatchSpanProcessor, batchSettingsFromEnv, otlpHttpBatchExporter } = load.export();
  return new EncodingBatchSpanProcessor(otlpHttpBatchExporter(), batchSettingsFromEnv(env));
}

/**
 * dsat's lean task spans (task-span.ts) when they decide exactly as the SDK just started would:
 * its sampler (read by the SDK from process.env) is the default parentbased_always_on or
 * always_on, and no span limit is set. The resource and scope are the SDK's, read from a span it
 * starts (never ended, so never exported).
 */
function taskSpanMaker(
  processors: readonly SpanProcessor[],
): TaskSpan.TaskSpanRecorder | undefined {
  const env = process.env;
  const sampler = env.OTEL_TRACES_SAMPLER?.trim() || 'parentbased_always_on';
  if (sampler !== 'parentbased_always_on' && sampler !== 'always_on') return undefined;
  if (Object.keys(env).some((name) => name.startsWith('OTEL_') && name.endsWith('_LIMIT'))) {
    return undefined;
  }
  const probe = dsatTracer().startSpan('dsat.probe', { root: true }) as Partial<ReadableSpan>;
  if (!probe.resource || !probe.instrumentationScope) return undefined;
  return new (load.taskSpan().TaskSpanRecorder)({
    resource: probe.resource,
    scope: probe.instrumentationScope,
    processors,
    parentBased: sampler === 'parentbased_always_on',
  });
}

export function startTelemetry(options: TelemetryOptions): Telemetry {
  const env = options.env ?? process.env;
  const otlp = env.OTEL_SDK_DISABLED === 'true' ? undefined : otlpProcessorFromEnv(env);
  const processors = [...(options.spanProcessors ?? []), ...(otlp ? [otlp] : [])];
  if (processors.length === 0) return { enabled: false, shutdown: () => Promise.resolve() };
  const sdk = new (load.sdk().NodeSDK)({
    ...(env.OTEL_SERVICE_NAME ? {} : { serviceName: options.serviceName }),
    spanProcessors: [...processors],
    ...(options.contextAcrossAwaits === false
      ? { contextManager: new SynchronousContextManager() }
      : {}),
    // Metrics are started on their own (metrics.ts), never by default to the OTLP endpoint.
    metricReaders: [],
    instrumentations: [],
  });
  sdk.start();
  useTaskSpanMaker(taskSpanMaker(processors));
  return {
    enabled: true,
    shutdown: () => {
      useTaskSpanMaker(undefined);
      return sdk.shutdown();
    },
  };
}
