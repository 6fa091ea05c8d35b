import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Attributes, BatchObservableCallback, Meter, Observable } from '@opentelemetry/api';
import { metrics, ValueType } from '@opentelemetry/api';
import type * as OtlpGrpc from '@opentelemetry/exporter-metrics-otlp-grpc';
import type * as OtlpHttp from '@opentelemetry/exporter-metrics-otlp-http';
import type * as OtlpProto from '@opentelemetry/exporter-metrics-otlp-proto';
import type * as Prometheus from '@opentelemetry/exporter-prometheus';
import type * as Resources from '@opentelemetry/resources';
import type * as SdkMetrics from '@opentelemetry/sdk-metrics';
import { exportersFromEnv, otlpProtocol, positiveFromEnv } from './otel-env';

/*
 * Metrics of a dsat process through OpenTelemetry: a Prometheus endpoint (`--metrics-port`) and
 * the exporters the standard OTEL_METRICS_EXPORTER variable names. The SDK is loaded only when
 * one is asked for; without it every dsat instrument is the API's no-op, and the observable ones
 * are never read.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const load = {
  sdk: () => require('@opentelemetry/sdk-metrics') as typeof SdkMetrics,
  resources: () => require('@opentelemetry/resources') as typeof Resources,
  prometheus: () => require('@opentelemetry/exporter-prometheus') as typeof Prometheus,
  proto: () => require('@opentelemetry/exporter-metrics-otlp-proto') as typeof OtlpProto,
  http: () => require('@opentelemetry/exporter-metrics-otlp-http') as typeof OtlpHttp,
  grpc: () => require('@opentelemetry/exporter-metrics-otlp-grpc') as typeof OtlpGrpc,
};
/* eslint-enable @typescript-eslint/no-require-imports */

let active = false;

/** The meter of every dsat instrument. */
export function dsatMeter(): Meter {
  return metrics.getMeter('dsat');
}

/** Whether this process exports metrics: instruments recorded on a hot path are made only then. */
export function metricsActive(): boolean {
  return active;
}

/**
 * Makers of dsat's observable instruments (whole-number gauges and counters), and `observe`,
 * which reads them all with one callback at each collection until the function it returns is
 * called.
 */
export function observableInts(meter: Meter = dsatMeter()) {
  return {
    gauge: (name: string, description: string, unit: string) =>
      meter.createObservableGauge(name, { description, unit, valueType: ValueType.INT }),
    counter: (name: string, description: string, unit: string) =>
      meter.createObservableCounter(name, { description, unit, valueType: ValueType.INT }),
    /** A histogram of seconds, with buckets from 1 ms to 10 min. */
    seconds: (name: string, description: string) =>
      meter.createHistogram(name, {
        description,
        unit: 's',
        advice: { explicitBucketBoundaries: DURATION_BUCKETS_S },
      }),
    observe(instruments: Observable[], callback: BatchObservableCallback): () => void {
      meter.addBatchObservableCallback(callback, instruments);
      return () => meter.removeBatchObservableCallback(callback, instruments);
    },
  };
}

/** Series of one metric kept at most; later new ones are counted as one overflow series. */
export const MAX_SERIES = 4096;

/** The attributes of the overflow series, as the SDK names it. */
export const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ 'otel.metric.overflow': true });

/**
 * The attribute sets of one metric by their values (in the order of `names`), each made once and
 * kept, so a record reuses an object instead of making one; past `max` sets, the overflow set.
 */
export function attributeSets(
  names: readonly string[],
  max = MAX_SERIES,
): (...values: string[]) => Attributes {
  const made = new Map<string, Attributes>();
  return (...values) => {
    const key = values.join('\0');
    let a = made.get(key);
    if (a === undefined) {
      if (made.size >= max) return OVERFLOW_ATTRIBUTES;
      a = Object.fromEntries(names.map((name, i) => [name, values[i]]));
      made.set(key, a);
    }
    return a;
  };
}

/** Histogram buckets in seconds, for an attempt or a whole task: 1 ms to 10 min. */
export const DURATION_BUCKETS_S = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

export interface MetricsOptions {
  /** service.name unless OTEL_SERVICE_NAME sets it. */
  readonly serviceName: string;
  /** Serve Prometheus metrics on this port (0 picks a free one); undefined serves none. */
  readonly prometheusPort?: number;
  readonly prometheusHost?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export interface Metrics {
  readonly enabled: boolean;
  /** Where Prometheus scrapes this process, when it serves metrics. */
  readonly prometheusUrl?: string;
  /** Collects and exports once more, then stops. */
  shutdown(): Promise<void>;
}

const OFF: Metrics = { enabled: false, shutdown: () => Promise.resolve() };

/** The OTLP protocol and URL of metrics, as the OTEL_EXPORTER_OTLP_* variables give them. */
export function otlpMetricsTarget(env: NodeJS.ProcessEnv): {
  protocol: string;
  url: string | undefined;
} {
  const protocol = otlpProtocol(env, 'METRICS');
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.replace(/\/+$/, '');
  const url =
    env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT ??
    (base === undefined ? undefined : protocol === 'grpc' ? base : `${base}/v1/metrics`);
  return { protocol, url };
}

function otlpExporter(env: NodeJS.ProcessEnv): SdkMetrics.PushMetricExporter {
  const { protocol, url } = otlpMetricsTarget(env);
  const config = url === undefined ? {} : { url };
  if (protocol === 'grpc') return new (load.grpc().OTLPMetricExporter)(config);
  if (protocol === 'http/json') return new (load.http().OTLPMetricExporter)(config);
  return new (load.proto().OTLPMetricExporter)(config);
}

/** An HTTP server answering GET /metrics from the exporter; errors name the address. */
async function servePrometheus(
  exporter: Prometheus.PrometheusExporter,
  host: string,
  port: number,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      exporter.getMetricsRequestHandler(req, res);
      return;
    }
    res.statusCode = 404;
    res.end('dsat serves its metrics at /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `cannot serve metrics on ${host}:${port}: ${
            err.code === 'EADDRINUSE' ? 'the port is in use' : err.message
          }`,
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}

/**
 * Starts the process's MeterProvider, registered as the global one before any service creates
 * its instruments (the metrics API has no proxy: an instrument made earlier stays a no-op).
 */
export async function startMetrics(options: MetricsOptions): Promise<Metrics> {
  const env = options.env ?? process.env;
  if (env.OTEL_SDK_DISABLED === 'true') return OFF;
  const exporters = exportersFromEnv(env, 'METRICS');
  const prometheusPort =
    options.prometheusPort ??
    (exporters.includes('prometheus')
      ? positiveFromEnv(env, 'OTEL_EXPORTER_PROMETHEUS_PORT', 9464)
      : undefined);
  const push = exporters.filter((e) => e === 'otlp' || e === 'console');
  if (prometheusPort === undefined && push.length === 0) return OFF;

  const sdk = load.sdk();
  const readers: SdkMetrics.IMetricReader[] = [];
  let server: http.Server | undefined;
  let prometheusUrl: string | undefined;
  if (prometheusPort !== undefined) {
    const exporter = new (load.prometheus().PrometheusExporter)({ preventServerStart: true });
    const host = options.prometheusHost ?? env.OTEL_EXPORTER_PROMETHEUS_HOST ?? '127.0.0.1';
    server = await servePrometheus(exporter, host, prometheusPort);
    const { port } = server.address() as AddressInfo;
    prometheusUrl = `http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics`;
    readers.push(exporter);
  }
  const exportIntervalMillis = positiveFromEnv(env, 'OTEL_METRIC_EXPORT_INTERVAL', 60_000);
  for (const name of push) {
    readers.push(
      new sdk.PeriodicExportingMetricReader({
        exporter: name === 'otlp' ? otlpExporter(env) : new sdk.ConsoleMetricExporter(),
        exportIntervalMillis,
        exportTimeoutMillis: Math.min(
          exportIntervalMillis,
          positiveFromEnv(env, 'OTEL_METRIC_EXPORT_TIMEOUT', 30_000),
        ),
      }),
    );
  }
  const resources = load.resources();
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ 'service.name': options.serviceName }))
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new sdk.MeterProvider({ resource, readers });
  metrics.setGlobalMeterProvider(provider);
  active = true;
  return {
    enabled: true,
    prometheusUrl,
    shutdown: async () => {
      try {
        await provider.shutdown();
      } finally {
        active = false;
        metrics.disable();
        if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}
