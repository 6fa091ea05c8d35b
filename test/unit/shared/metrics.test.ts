import {
  metricExportersFromEnv,
  metricsActive,
  startMetrics,
} from '../../../services/shared/metrics';

describe('metric exporters from the OTEL_* variables', () => {
  it('are those OTEL_METRICS_EXPORTER names, none with "none"', () => {
    expect(metricExportersFromEnv({ OTEL_METRICS_EXPORTER: 'prometheus, otlp,otlp' })).toEqual([
      'prometheus',
      'otlp',
    ]);
    expect(metricExportersFromEnv({ OTEL_METRICS_EXPORTER: 'otlp,none' })).toEqual([]);
  });

  it('default to OTLP only when an OTLP endpoint is set, so nothing is sent anywhere unasked', () => {
    expect(metricExportersFromEnv({})).toEqual([]);
    expect(
      metricExportersFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }),
    ).toEqual(['otlp']);
    expect(
      metricExportersFromEnv({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://c:4318/v1/metrics' }),
    ).toEqual(['otlp']);
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
});
