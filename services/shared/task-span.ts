import type {
  Attributes,
  AttributeValue,
  Context,
  Exception,
  HrTime,
  Link,
  Span,
  SpanContext,
  SpanKind,
  SpanStatus,
  TimeInput,
} from '@opentelemetry/api';
import { diag, ROOT_CONTEXT, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import {
  addHrTimes,
  hrTime,
  hrTimeDuration,
  isAttributeValue,
  isTimeInput,
  isTimeInputHrTime,
  millisToHrTime,
  sanitizeAttributes,
} from '@opentelemetry/core';
import type { ReadableSpan, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace-base';
import { randomHexId } from './random-ids';
import type { SharedAttributes } from './task-tracing';

/*
 * dsat's own spans (submit, dispatch, process) made without the SDK's general tracer. Its
 * startSpan and span class cost 7–8 µs per span here before any export (attribute sanitizing and
 * copying twice, a sampler call, span metrics objects, id validation by regex), several times that
 * inside the benchmark, and a task has seven spans. Task spans are built from values dsat already
 * checked, so they need none of it. The result is an ordinary ReadableSpan given to the same
 * processors (and so to the same exporters) with the same resource and scope; everything a
 * handler may do with its span (attributes, events, exceptions, links, status, name) behaves as on
 * an SDK span, with the SDK's default limits.
 *
 * Used only where it decides exactly as the SDK would: the sampler is the default
 * `parentbased_always_on` or `always_on`, and no span limit is configured (telemetry.ts checks).
 */

/** The SDK's default count limits: attributes, events and links per span, attributes per event or link. */
const LIMIT = 128;
const EXCEPTION_EVENT = 'exception';

export interface TaskSpanRecorderOptions {
  readonly resource: ReadableSpan['resource'];
  readonly scope: ReadableSpan['instrumentationScope'];
  readonly processors: readonly SpanProcessor[];
  /** parentbased_always_on (a parent's sampled flag decides) rather than always_on. */
  readonly parentBased: boolean;
}

export class TaskSpanRecorder {
  constructor(readonly options: TaskSpanRecorderOptions) {}

  /**
   * A span under `parent` (a new trace without one). `attributes` are taken as they are, not
   * copied: dsat builds them for this span, each a valid attribute value.
   */
  start(
    name: string,
    kind: SpanKind,
    parent: SpanContext | undefined,
    attributes: Attributes,
    links: readonly Link[],
    shared?: SharedAttributes,
  ): Span {
    const spanId = randomHexId(8);
    if (parent && this.options.parentBased && (parent.traceFlags & TraceFlags.SAMPLED) === 0) {
      return trace.wrapSpanContext({
        traceId: parent.traceId,
        spanId,
        traceFlags: TraceFlags.NONE,
        traceState: parent.traceState,
      });
    }
    const spanContext: SpanContext = {
      traceId: parent ? parent.traceId : randomHexId(16),
      spanId,
      traceFlags: TraceFlags.SAMPLED,
      traceState: parent?.traceState,
    };
    const span = new TaskSpan(this.options, name, kind, spanContext, parent, attributes, shared);
    for (const link of links) span.addLink(link);
    const parentContext = new ParentContext(parent);
    for (const p of this.options.processors) p.onStart(span, parentContext);
    return span;
  }
}

/** The context a task span starts in, its parent alone; built only if a processor reads it. */
class ParentContext implements Context {
  private built: Context | undefined;

  constructor(private readonly parent: SpanContext | undefined) {}

  private get context(): Context {
    this.built ??= this.parent ? trace.setSpanContext(ROOT_CONTEXT, this.parent) : ROOT_CONTEXT;
    return this.built;
  }

  getValue(key: symbol): unknown {
    return this.context.getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return this.context.setValue(key, value);
  }

  deleteValue(key: symbol): Context {
    return this.context.deleteValue(key);
  }
}

class TaskSpan implements Span, ReadableSpan {
  readonly resource: ReadableSpan['resource'];
  readonly instrumentationScope: ReadableSpan['instrumentationScope'];
  readonly links: Link[] = [];
  readonly events: TimedEvent[] = [];
  status: SpanStatus = { code: SpanStatusCode.UNSET };
  endTime: HrTime = [0, 0];
  duration: HrTime = [-1, -1];
  ended = false;
  droppedAttributesCount = 0;
  droppedEventsCount = 0;
  droppedLinksCount = 0;
  readonly startTime: HrTime;
  private attributeCount: number;
  private readonly startedAt: number;
  /** Epoch ms minus the performance clock's, at the start: how the SDK reads performance times. */
  private readonly clockOffset: number;

  constructor(
    private readonly recorder: TaskSpanRecorderOptions,
    public name: string,
    readonly kind: SpanKind,
    private readonly context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    readonly attributes: Attributes,
    /** The last of `attributes` shared with other spans; dropped once an attribute is set. */
    public sharedAttributes: SharedAttributes | undefined,
  ) {
    this.resource = recorder.resource;
    this.instrumentationScope = recorder.scope;
    const now = Date.now();
    this.startedAt = performance.now();
    this.clockOffset = now - (this.startedAt + performance.timeOrigin);
    this.startTime = millisToHrTime(now);
    this.attributeCount = Object.keys(attributes).length;
  }

  spanContext(): SpanContext {
    return this.context;
  }

  isRecording(): boolean {
    return !this.ended;
  }

  setAttribute(key: string, value: AttributeValue): this {
    if (value == null || this.endedWarn()) return this;
    if (key.length === 0 || !isAttributeValue(value)) {
      diag.warn(`Invalid attribute ${key.length === 0 ? 'key' : `value set for key: ${key}`}`);
      return this;
    }
    const isNew = !Object.prototype.hasOwnProperty.call(this.attributes, key);
    if (isNew && this.attributeCount >= LIMIT) {
      this.droppedAttributesCount++;
      return this;
    }
    this.attributes[key] = value;
    this.sharedAttributes = undefined;
    if (isNew) this.attributeCount++;
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key of Object.keys(attributes)) this.setAttribute(key, attributes[key]!);
    return this;
  }

  addEvent(name: string, attributesOrTime?: Attributes | TimeInput, time?: TimeInput): this {
    if (this.endedWarn()) return this;
    if (this.events.length >= LIMIT) {
      this.events.shift();
      this.droppedEventsCount++;
    }
    let attributes: Attributes | undefined;
    if (isTimeInput(attributesOrTime)) {
      if (!isTimeInput(time)) time = attributesOrTime;
    } else attributes = attributesOrTime;
    const { kept, dropped } = limited(attributes);
    this.events.push({
      name,
      attributes: kept,
      time: this.timeOf(time),
      droppedAttributesCount: dropped,
    });
    return this;
  }

  addLink(link: Link): this {
    if (this.endedWarn()) return this;
    if (this.links.length >= LIMIT) {
      this.links.shift();
      this.droppedLinksCount++;
    }
    const { kept, dropped } = limited(link.attributes);
    const added: Link = { context: link.context };
    if (Object.keys(kept).length > 0) added.attributes = kept;
    if (dropped > 0) added.droppedAttributesCount = dropped;
    this.links.push(added);
    return this;
  }

  addLinks(links: Link[]): this {
    for (const link of links) this.addLink(link);
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (this.endedWarn() || status.code === SpanStatusCode.UNSET) return this;
    if (this.status.code === SpanStatusCode.OK) return this;
    this.status =
      status.code === SpanStatusCode.ERROR && typeof status.message === 'string'
        ? { code: status.code, message: status.message }
        : { code: status.code };
    return this;
  }

  updateName(name: string): this {
    if (!this.endedWarn()) this.name = name;
    return this;
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {};
    if (typeof exception === 'string') attributes['exception.message'] = exception;
    else if (exception) {
      const type = exception.code ? String(exception.code) : exception.name;
      if (type) attributes['exception.type'] = type;
      if (exception.message) attributes['exception.message'] = exception.message;
      if (exception.stack) attributes['exception.stacktrace'] = exception.stack;
    }
    if (attributes['exception.type'] || attributes['exception.message']) {
      this.addEvent(EXCEPTION_EVENT, attributes, time);
    } else diag.warn(`Failed to record an exception ${String(exception)}`);
  }

  end(endTime?: TimeInput): void {
    if (this.ended) {
      diag.error(
        `${this.name} ${this.context.traceId}-${this.context.spanId} - You can only call end() on a span once.`,
      );
      return;
    }
    this.endTime = this.timeOf(endTime);
    this.duration = hrTimeDuration(this.startTime, this.endTime);
    if (this.duration[0] < 0) {
      this.endTime = this.startTime.slice() as HrTime;
      this.duration = [0, 0];
    }
    for (const p of this.recorder.processors) p.onEnding?.(this);
    this.ended = true;
    for (const p of this.recorder.processors) p.onEnd(this);
  }

  /** An explicit time as the SDK reads it; none means now, on the span's monotonic clock. */
  private timeOf(input: TimeInput | undefined): HrTime {
    if (input === undefined) {
      return addHrTimes(this.startTime, millisToHrTime(performance.now() - this.startedAt));
    }
    if (typeof input === 'number') {
      // Below performance.now(): a performance timestamp (as the SDK reads it); else epoch ms.
      return input <= performance.now() ? hrTime(input + this.clockOffset) : millisToHrTime(input);
    }
    if (input instanceof Date) return millisToHrTime(input.getTime());
    return isTimeInputHrTime(input) ? input : this.timeOf(undefined);
  }

  private endedWarn(): boolean {
    if (this.ended) {
      diag.warn(
        `Can not execute the operation on ended Span {traceId: ${this.context.traceId}, spanId: ${this.context.spanId}}`,
      );
    }
    return this.ended;
  }
}

/** An event's or link's attributes, sanitized and cut to the per-event/link limit. */
function limited(attributes: Attributes | undefined): { kept: Attributes; dropped: number } {
  const sanitized = sanitizeAttributes(attributes);
  const kept: Attributes = {};
  let count = 0;
  let dropped = 0;
  for (const key of Object.keys(sanitized)) {
    if (count >= LIMIT) dropped++;
    else {
      kept[key] = sanitized[key];
      count++;
    }
  }
  return { kept, dropped };
}
