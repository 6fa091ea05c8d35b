import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  attributeSets,
  dsatMeter,
  metricsActive,
  OVERFLOW_ATTRIBUTES,
  otlpMetricsTarget,
  startMetrics,
} from '../../../services/shared/metrics';
import { exportersFromEnv } from '../../../services/shared/otel-env';

describe('metric exporters from the OTEL_* variables', () => {
  it('are those OTEL_METRICS_EXPORTER names, none with "none"', () => {
    expect(exportersFromEnv({ OTEL_METRICS_EXPORTER: 'prometheus, otlp,otlp' }, 'METRICS')).toEqual(
      ['prometheus', 'otlp'],
    );
    expect(exportersFromEnv({ OTEL_METRICS_EXPORTER: 'otlp,none' }, 'METRICS')).toEqual([]);
  });

  it('default to OTLP only when an OTLP endpoint is set, so nothing is sent anywhere unasked', () => {
    expect(exportersFromEnv({}, 'METRICS')).toEqual([]);
    expect(
      exportersFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, 'METRICS'),
    ).toEqual(['otlp']);
    expect(
      exportersFromEnv(
        { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://c:4318/v1/metrics' },
        'METRICS',
      ),
    ).toEqual(['otlp']);
  });
});

describe('trace exporters from the OTEL_* variables', () => {
  it('follow the same rule, with the variables of traces', () => {
    expect(exportersFromEnv({ OTEL_TRACES_EXPORTER: 'otlp' }, 'TRACES')).toEqual(['otlp']);
    expect(
      exportersFromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces' }, 'TRACES'),
    ).toEqual(['otlp']);
    expect(
      exportersFromEnv(
        { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://c:4318/v1/metrics' },
        'TRACES',
      ),
    ).toEqual([]);
  });
});

describe('the OTLP target of metrics', () => {
  it('is the metrics endpoint as set, else the base endpoint with /v1/metrics (as is for gRPC)', () => {
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' };
    expect(otlpMetricsTarget(base)).toEqual({
      protocol: 'http/protobuf',
      url: 'http://collector:4318/v1/metrics',
    });
    expect(otlpMetricsTarget({ ...base, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toEqual({
      protocol: 'grpc',
      url: 'http://collector:4318',
    });
    expect(
      otlpMetricsTarget({ ...base, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://m:4318/x' }).url,
    ).toBe('http://m:4318/x');
    expect(otlpMetricsTarget({}).url).toBeUndefined();
  });
});

describe('attribute sets', () => {
  it('are made once per values and named in order; past the most kept, the overflow set', () => {
    const sets = attributeSets(['dsat.stage', 'dsat.outcome'], 2);
    const done = sets('parse', 'done');
    expect(done).toEqual({ 'dsat.stage': 'parse', 'dsat.outcome': 'done' });
    expect(sets('parse', 'done')).toBe(done);
    expect(sets('parse', 'failed')).toEqual({ 'dsat.stage': 'parse', 'dsat.outcome': 'failed' });
    expect(sets('hash', 'done')).toBe(OVERFLOW_ATTRIBUTES);
    expect(sets('parse', 'done')).toBe(done);
  });
});

describe('startMetrics', () => {
  it('starts nothing when no port and no exporter is asked for, or when the SDK is disabled', async () => {
    expect((await startMetrics({ serviceName: 'x', env: {} })).enabled).toBe(false);
    const disabled = await startMetrics({
      serviceName: 'x',
      prometheusPort: 0,
      env: { OTEL_SDK_DISABLED: 'true' },
    });
    expect(disabled.enabled).toBe(false);
    expect(metricsActive()).toBe(false);
  });

  it('serves /metrics on the port asked for, and stops serving at shutdown', async () => {
    const metrics = await startMetrics({ serviceName: 'dsat-test', prometheusPort: 0, env: {} });
    try {
      expect(metricsActive()).toBe(true);
      const res = await fetch(metrics.prometheusUrl!);
      expect(res.status).toBe(200);
      expect(await res.text()).toMatch(/target_info\{service_name="dsat-test"/);
    } finally {
      await metrics.shutdown();
    }
    expect(metricsActive()).toBe(false);
    await expect(fetch(metrics.prometheusUrl!)).rejects.toThrow();
  });

  it('sends them over OTLP/HTTP protobuf when OTEL_METRICS_EXPORTER says otlp', async () => {
    const posts: { path: string; type: string; bytes: number }[] = [];
    const collector = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        posts.push({
          path: req.url ?? '',
          type: req.headers['content-type'] ?? '',
          bytes: Buffer.concat(chunks).length,
        });
        res.end();
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const { port } = collector.address() as AddressInfo;
    const metrics = await startMetrics({
      serviceName: 'dsat-test',
      env: {
        OTEL_METRICS_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_METRIC_EXPORT_INTERVAL: '100',
      },
    });
    try {
      expect(metrics.prometheusUrl).toBeUndefined();
      dsatMeter().createCounter('dsat.test.counted').add(3);
      const deadline = Date.now() + 10_000;
      while (posts.length === 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(posts[0]).toMatchObject({ path: '/v1/metrics', type: 'application/x-protobuf' });
      expect(posts[0]!.bytes).toBeGreaterThan(0);
    } finally {
      await metrics.shutdown();
      collector.close();
    }
  });
});
