import type { SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { OTLPTraceExporter as OtlpHttpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as OtlpGrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';

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
  readonly env?: NodeJS.ProcessEnv;
}

function otlpExporterFromEnv(env: NodeJS.ProcessEnv): SpanExporter | undefined {
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const wanted = exporters.length > 0 ? exporters.includes('otlp') : endpoint !== undefined;
  if (!wanted) return undefined;
  const protocol =
    env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  if (protocol === 'grpc') return new OtlpGrpcExporter();
  if (protocol === 'http/json') return new OtlpHttpJsonExporter();
  return new OtlpProtoExporter();
}

export function startTelemetry(options: TelemetryOptions): Telemetry {
  const env = options.env ?? process.env;
  const exporter = env.OTEL_SDK_DISABLED === 'true' ? undefined : otlpExporterFromEnv(env);
  const processors = [
    ...(options.spanProcessors ?? []),
    ...(exporter ? [new BatchSpanProcessor(exporter)] : []),
  ];
  if (processors.length === 0) return { enabled: false, shutdown: () => Promise.resolve() };
  const sdk = new NodeSDK({
    ...(env.OTEL_SERVICE_NAME ? {} : { serviceName: options.serviceName }),
    spanProcessors: [...processors],
    instrumentations: [],
  });
  sdk.start();
  return { enabled: true, shutdown: () => sdk.shutdown() };
}
