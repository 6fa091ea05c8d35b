import { context, diag, TraceFlags } from '@opentelemetry/api';
import {
  ExportResultCode,
  globalErrorHandler,
  suppressTracing,
  type ExportResult,
} from '@opentelemetry/core';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { positiveFromEnv } from './otel-env';
import { SpanBatch } from './otlp-span-encoder';

/*
 * OTLP/HTTP protobuf export (the default protocol), as the SDK's BatchSpanProcessor and the
 * exporter-trace-otlp-proto exporter do it — same OTEL_BSP_* settings, same OTEL_EXPORTER_OTLP_*
 * configuration, transport and retries (the exporter's own) — except that each span is encoded
 * when it ends instead of being held until its batch is sent. Held spans outlive a few young
 * collections and are copied into the old generation; in the pipeline benchmark, holding them
 * longer (OTEL_BSP_SCHEDULE_DELAY 2 s instead of 0.5) cost every traced process ~15% more CPU.
 */

export interface BatchSettings {
  readonly scheduledDelayMillis: number;
  readonly maxExportBatchSize: number;
  readonly maxQueueSize: number;
  readonly exportTimeoutMillis: number;
}

/** The BatchSpanProcessor's defaults and OTEL_BSP_* variables; a bad value means its default. */
export function batchSettingsFromEnv(env: NodeJS.ProcessEnv): BatchSettings {
  const positive = (name: string, fallback: number) => positiveFromEnv(env, name, fallback);
  const maxQueueSize = positive('OTEL_BSP_MAX_QUEUE_SIZE', 2048);
  return {
    scheduledDelayMillis: positive('OTEL_BSP_SCHEDULE_DELAY', 5000),
    maxQueueSize,
    maxExportBatchSize: Math.min(positive('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512), maxQueueSize),
    exportTimeoutMillis: positive('OTEL_BSP_EXPORT_TIMEOUT', 30000),
  };
}

/** What the processor needs of an exporter: send one batch, report how it went. */
export interface SpanBatchExporter {
  export(batch: SpanBatch, done: (result: ExportResult) => void): void;
  shutdown(): Promise<void>;
}

/** The OTLP/HTTP exporter, configured by OTEL_EXPORTER_OTLP_* like exporter-trace-otlp-proto. */
export function otlpHttpBatchExporter(config: { url?: string } = {}): SpanBatchExporter {
  const delegate = createOtlpHttpExportDelegate(
    convertLegacyHttpOptions(config, 'TRACES', 'v1/traces', {
      'Content-Type': 'application/x-protobuf',
    }),
    {
      serializeRequest: (batch: SpanBatch) => batch.request(),
      deserializeResponse: (data: Uint8Array) => ProtobufTraceSerializer.deserializeResponse(data),
    },
    'otlp_http_span_exporter',
    { name: 'span', countItems: (batch: SpanBatch) => batch.count },
    undefined,
  );
  return new OTLPExporterBase<SpanBatch>(delegate);
}

/**
 * Encodes each sampled span as it ends into the open batch; sends a batch when it holds
 * maxExportBatchSize spans or scheduledDelayMillis after its first span, one export at a time.
 * Spans beyond maxQueueSize (open batch plus batches waiting) are dropped, with a warning.
 */
export class EncodingBatchSpanProcessor implements SpanProcessor {
  private open = new SpanBatch();
  private waiting = 0;
  private sent: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private dropped = 0;
  private stopped: Promise<void> | undefined;

  constructor(
    private readonly exporter: SpanBatchExporter,
    private readonly settings: BatchSettings,
  ) {}

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.stopped || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.waiting + this.open.count >= this.settings.maxQueueSize) {
      if (this.dropped++ === 0) diag.debug('maxQueueSize reached, dropping spans');
      return;
    }
    if (this.dropped > 0) {
      diag.warn(`Dropped ${this.dropped} spans because maxQueueSize reached`);
      this.dropped = 0;
    }
    try {
      this.open.add(span);
    } catch (err) {
      globalErrorHandler(err as Error);
      return;
    }
    if (this.open.count >= this.settings.maxExportBatchSize) void this.close();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => void this.close(), this.settings.scheduledDelayMillis);
      this.timer.unref();
    }
  }

  /** Closes the open batch and queues it; resolves when every batch queued so far is sent. */
  private close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.open;
    if (batch.count > 0) {
      this.open = new SpanBatch();
      this.waiting += batch.count;
      this.sent = this.sent.then(() =>
        this.send(batch)
          .catch((err: unknown) => globalErrorHandler(err as Error))
          .finally(() => {
            this.waiting -= batch.count;
          }),
      );
    }
    return this.sent;
  }

  private async send(batch: SpanBatch): Promise<void> {
    for (const resource of batch.resources()) {
      if (resource.asyncAttributesPending) await resource.waitForAsyncAttributes?.();
    }
    await new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(
        () => reject(new Error('Timeout')),
        this.settings.exportTimeoutMillis,
      );
      context.with(suppressTracing(context.active()), () =>
        this.exporter.export(batch, (result) => {
          clearTimeout(timeout);
          if (result.code === ExportResultCode.SUCCESS) resolve();
          else reject(result.error ?? new Error('span export failed'));
        }),
      );
    });
  }

  forceFlush(): Promise<void> {
    return this.close();
  }

  shutdown(): Promise<void> {
    this.stopped ??= this.close().then(() => this.exporter.shutdown());
    return this.stopped;
  }
}
