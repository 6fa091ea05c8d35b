/*
 * The standard OTEL_* variables as every dsat signal (traces, metrics) reads them, one rule each.
 */

export type OtelSignal = 'TRACES' | 'METRICS';

/** A positive number from the variable `name`; anything else (unset, bad, 0) means `fallback`. */
export function positiveFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = Number(env[name]?.trim() || NaN);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/** The OTLP protocol of a signal: its own variable, the general one, else http/protobuf. */
export function otlpProtocol(env: NodeJS.ProcessEnv, signal: OtelSignal): string {
  return (
    env[`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`] ??
    env.OTEL_EXPORTER_OTLP_PROTOCOL ??
    'http/protobuf'
  );
}

/**
 * The exporters OTEL_<signal>_EXPORTER names (none with `none`). Unset, `otlp` when an OTLP
 * endpoint is set for the signal, else none: a process with no OTEL_* variables sends nothing.
 */
export function exportersFromEnv(env: NodeJS.ProcessEnv, signal: OtelSignal): string[] {
  const named = (env[`OTEL_${signal}_EXPORTER`] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (named.includes('none')) return [];
  if (named.length > 0) return [...new Set(named)];
  const endpoint = env[`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`] ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  return endpoint === undefined ? [] : ['otlp'];
}
