import crypto from 'node:crypto';
import { SpanBatch } from '../services/shared/otlp-span-encoder';
import { EncodingBatchSpanProcessor } from '../services/shared/otlp-span-export';
import { startTelemetry } from '../services/shared/telemetry';
import { endTaskSpan, SpanKind, startTaskSpan } from '../services/shared/task-tracing';
const spans: any[] = [];
const processor = { onStart() {}, onEnd(s: any) { spans.push(s); }, forceFlush: () => Promise.resolve(), shutdown: () => Promise.resolve() };
startTelemetry({ serviceName: 'x', spanProcessors: [processor as any], env: {} });
const PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
for (let i = 0; i < 20000; i++) {
  const span = startTaskSpan('dsat.process stage1', SpanKind.CONSUMER, PARENT,
    { taskId: crypto.randomUUID(), pipeline: 'pipeline3', stage: 'stage1', attempt: 1, workerId: 'vm-31719-80f6ed', parentTaskId: '' }, 'process');
  endTaskSpan(span);
}
const variant = process.env.V ?? 'full';
if (variant === 'noattr') for (const s of spans) { for (const k of Object.keys(s.attributes)) if (k !== 'dsat.task_id') delete s.attributes[k]; }
if (variant === 'noattr2') for (const s of spans) { (s as any).attributes = { 'dsat.task_id': s.attributes['dsat.task_id'] }; }
if (variant === '3attr') for (const s of spans) { const a = s.attributes; (s as any).attributes = { 'dsat.task_id': a['dsat.task_id'], 'messaging.message.id': a['messaging.message.id'], 'dsat.attempt': 1 }; }
for (let round = 0; round < 8; round++) {
  let b = new SpanBatch(); let r = 0;
  const t = performance.now();
  for (let i = 0; i < spans.length; i++) { b.add(spans[i]); if (i % 1000 === 999) { r += b.request().length; b = new SpanBatch(); } }
  const el = performance.now() - t;
  if (round > 2) console.log(variant, ((el * 1000) / spans.length).toFixed(2), 'us/span', (r / spans.length).toFixed(0), 'B');
}
