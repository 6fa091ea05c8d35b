import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';

/** One finished span as `dsat trace` needs it, whichever process it came from. */
export interface StoredSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  /** OTLP numbering: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number;
  readonly serviceName: string;
  /** Unix epoch, nanoseconds, as a decimal string (too big for a double). */
  readonly startTimeUnixNano: string;
  readonly endTimeUnixNano: string;
  /** 0 unset, 1 OK, 2 ERROR (OTLP status codes). */
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  readonly links: readonly { traceId: string; spanId: string }[];
}

/**
 * The recent spans `dsat up` keeps so that `dsat trace` works with nothing installed. A ring of
 * at most `capacity` spans, indexed by trace id.
 */
export class SpanStore {
  private readonly ring: (StoredSpan | undefined)[];
  private next = 0;
  private readonly byTrace = new Map<string, StoredSpan[]>();

  constructor(readonly capacity = 200_000) {
    this.ring = new Array<StoredSpan | undefined>(capacity);
  }

  add(span: StoredSpan): void {
    const old = this.ring[this.next];
    if (old) {
      const list = this.byTrace.get(old.traceId);
      const i = list?.indexOf(old) ?? -1;
      if (list && i >= 0) list.splice(i, 1);
      if (list && list.length === 0) this.byTrace.delete(old.traceId);
    }
    this.ring[this.next] = span;
    this.next = (this.next + 1) % this.capacity;
    const list = this.byTrace.get(span.traceId);
    if (list) list.push(span);
    else this.byTrace.set(span.traceId, [span]);
  }

  trace(traceId: string): StoredSpan[] {
    return [...(this.byTrace.get(traceId.toLowerCase()) ?? [])];
  }

  /** Distinct traces held. */
  get traceCount(): number {
    return this.byTrace.size;
  }

  clear(): void {
    this.ring.fill(undefined);
    this.byTrace.clear();
    this.next = 0;
  }

  get size(): number {
    let n = 0;
    for (const l of this.byTrace.values()) n += l.length;
    return n;
  }

  /** A processor that puts this process's own spans in the store, without a network hop. */
  processor(): SpanProcessor {
    return {
      onStart: () => undefined,
      onEnd: (span) => this.add(fromReadableSpan(span)),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
  }
}

function hrTimeToNanos([s, ns]: [number, number]): string {
  return (BigInt(s) * 1_000_000_000n + BigInt(ns)).toString();
}

export function fromReadableSpan(span: ReadableSpan): StoredSpan {
  const attributes: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(span.attributes)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') attributes[k] = v;
  }
  const sc = span.spanContext();
  return {
    traceId: sc.traceId,
    spanId: sc.spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? '',
    name: span.name,
    kind: span.kind + 1, // the API counts from 0, OTLP from 1
    serviceName: String(span.resource.attributes['service.name'] ?? 'unknown'),
    startTimeUnixNano: hrTimeToNanos(span.startTime),
    endTimeUnixNano: hrTimeToNanos(span.endTime),
    statusCode: span.status.code,
    statusMessage: span.status.message ?? '',
    attributes,
    links: span.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
  };
}
