/**
 * What one task span costs in one process, made, ended and encoded into OTLP requests: by the
 * SDK's tracer and by dsat's task-span recorder (task-span.ts), in alternating rounds so that
 * both see the same machine. Prints one JSON line.
 *
 *   npm run bench:spans -- [--spans 20000] [--rounds 10]
 */
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import type { SpanBatch } from '../services/shared/otlp-span-encoder';
import { EncodingBatchSpanProcessor } from '../services/shared/otlp-span-export';
import { startTelemetry } from '../services/shared/telemetry';
import {
  endTaskSpan,
  SpanKind,
  startTaskSpan,
  useTaskSpanMaker,
} from '../services/shared/task-tracing';

const { values: args } = parseArgs({
  options: {
    spans: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '10' },
  },
});
function count(name: 'spans' | 'rounds'): number {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench:spans: --${name} must be a whole number of at least 1, not ${args[name]}`);
    process.exit(2);
  }
  return n;
}
const SPANS = count('spans');
const ROUNDS = count('rounds');
/** Microseconds to two decimals. */
const us2 = (x: number) => Math.round(x * 100) / 100;
const PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

async function main() {
  let requestBytes = 0;
  // Every batch is turned into its request bytes, as the OTLP exporter would before sending.
  const processor = new EncodingBatchSpanProcessor(
    {
      export: (batch: SpanBatch, done) => {
        requestBytes += batch.request().length;
        done({ code: 0 });
      },
      shutdown: () => Promise.resolve(),
    },
    {
      scheduledDelayMillis: 500,
      maxExportBatchSize: 512,
      maxQueueSize: 4096,
      exportTimeoutMillis: 30000,
    },
  );
  const telemetry = startTelemetry({
    serviceName: 'dsat-bench-spans',
    spanProcessors: [processor],
    env: {},
  });
  const recorder = useTaskSpanMaker(undefined);
  if (!recorder) throw new Error('the task-span recorder is off (an OTEL_* setting turns it off)');
  const ids = Array.from({ length: SPANS }, () => crypto.randomUUID());
  const round = async (): Promise<number> => {
    const before = process.cpuUsage();
    for (let i = 0; i < SPANS; i++) {
      const span = startTaskSpan(
        'dsat.process parse',
        SpanKind.CONSUMER,
        PARENT,
        { taskId: ids[i]!, pipeline: 'pipeline3', stage: 'parse', attempt: 1, workerId: 'w-1' },
        'process',
      );
      endTaskSpan(span);
      // Let batches go out as they would between tasks.
      if (i % 256 === 255) await new Promise((r) => setImmediate(r));
    }
    await processor.forceFlush();
    const used = process.cpuUsage(before);
    return (used.user + used.system) / SPANS;
  };
  const times = { sdk: [] as number[], recorder: [] as number[] };
  for (let r = 0; r < ROUNDS + 1; r++) {
    for (const kind of ['sdk', 'recorder'] as const) {
      useTaskSpanMaker(kind === 'sdk' ? undefined : recorder);
      const us = await round();
      if (r > 0) times[kind].push(us); // the first round of each warms the JIT
    }
  }
  await telemetry.shutdown();
  const median = (v: number[]) => {
    const s = [...v].sort((a, b) => a - b);
    return us2(s[s.length >> 1]!);
  };
  console.log(
    JSON.stringify({
      type: 'summary',
      system: 'dsat-task-spans',
      sdk_tracer_cpu_us_per_span: median(times.sdk),
      recorder_cpu_us_per_span: median(times.recorder),
      sdk_tracer_range: [Math.min(...times.sdk), Math.max(...times.sdk)].map(us2),
      recorder_range: [Math.min(...times.recorder), Math.max(...times.recorder)].map(us2),
      request_bytes_per_span: Math.round(requestBytes / (SPANS * (ROUNDS + 1) * 2)),
      spans_per_round: SPANS,
      rounds: ROUNDS,
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
