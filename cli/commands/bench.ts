import fs from 'node:fs';
import { Command } from 'commander';
import type { PipelineLoadResult } from '../../bench/pipeline-load';
import { runPipelineLoad } from '../../bench/pipeline-load';
import type { EmbeddedMesh, EmbeddedMeshOptions } from '../../bench/embedded-mesh';
import { startEmbeddedMesh } from '../../bench/embedded-mesh';
import type { BenchOptions, RunRecord } from '../../bench/pipeline3/orchestrator';
import {
  measurementLabel,
  measurements,
  runPipeline3,
  summarize,
  summarizeTracingCost,
  systemName,
} from '../../bench/pipeline3/orchestrator';
import { createLogger } from '../../services/shared/logger';
import { startOtlpReceiver } from '../../services/shared/otlp-receiver';
import { SpanStore } from '../../services/shared/span-store';
import { readPipelineFile } from '../../services/tracker/pipeline-file';
import type { CommandContext } from '../command-context';
import { meshAction } from '../command-context';
import type { MeshClients } from '../mesh-clients';
import { describeError, printJson, progressBar, table } from '../output';
import { guessContentType, readPayload } from './task-commands';

/** Options of the built-in workload only, refused beside --pipeline. */
const WORKLOAD_ONLY = ['modes', 'rate', 'duration', 'warmup', 'runs', 'tracing', 'runsFile'];
/** Options of a mesh the bench starts itself: the built-in workload's, or --embedded's. */
const OWN_MESH_ONLY = ['concurrency', 'sync'];
/** Options of --embedded only. */
const EMBEDDED_ONLY = ['embedded', 'handler', 'stageMs'];
/** The global options naming a running mesh, meaningless beside --embedded. */
const MESH_ADDRESSES = ['router', 'status', 'tracker'];

/** A whole number of at least `min`, or exit 2 naming the flag. */
function wholeNumber(value: unknown, flag: string, min = 1): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(
      `dsat: --${flag} must be a whole number of at least ${min}, not ${JSON.stringify(value)}\n`,
    );
    process.exit(2);
  }
  return n;
}

/** The flag of an option: bench has only the negated form of `sync`. */
const flagOf = (name: string) =>
  name === 'sync' ? 'no-sync' : name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** Exits 2 when any of `given` was set, naming them and what they need instead. */
function refuse(given: string[], why: string): void {
  if (given.length === 0) return;
  process.stderr.write(
    `dsat: ${given.map((o) => `--${flagOf(o)}`).join(', ')} ${given.length === 1 ? 'applies' : 'apply'} ${why}\n`,
  );
  process.exit(2);
}

/** `dsat bench`: the peers' pipeline3 workload against a mesh of separate processes. */
export function benchCommand(): Command {
  return new Command('bench')
    .description(
      "Run the pipeline3 benchmark (the peers' workload): status, router, tracker and one worker per stage as separate processes; T = closed-loop throughput, L = open-loop latency.",
    )
    .option('--workload <name>', 'built-in workload', 'pipeline3')
    .option(
      '--pipeline <file|name>',
      'instead of the built-in workload: load a pipeline of the running mesh (--router, --status, --tracker) with its own workers; a file is applied first',
    )
    .option(
      '--embedded',
      'with --pipeline FILE: run it on a mesh started in this process (store in a temporary directory), one worker per stage',
    )
    .option(
      '--handler <file>',
      'with --embedded: a module exporting a handler per stage (as `dsat worker --handler`), instead of synthetic ones',
    )
    .option(
      '--stage-ms <ms>',
      'with --embedded: how long each synthetic attempt takes; it passes its input on',
      '0',
    )
    .option('--payload <text|@file|->', 'with --pipeline: the payload of every task', '{}')
    .option('--content-type <type>', 'with --pipeline: the payload type (default: guessed)')
    .option(
      '--stall-timeout <s>',
      'with --pipeline: give up when no task has ended for this many seconds',
      '60',
    )
    .option('--tasks <n>', 'tasks in a T run (with --pipeline: 1000)', '20000')
    .option('--window <n>', 'most tasks in flight in a T run (with --pipeline: 100)', '2000')
    .option(
      '--rate <n[,n...]>',
      'tasks per second in an L run; a list (50,200,1000) measures L at each rate, for latency against load',
      '1000',
    )
    .option('--duration <s>', 'seconds of an L run', '10')
    .option('--warmup <n>', 'tasks before each measured run', '1000')
    .option('--runs <n>', 'runs of each measurement', '3')
    .option('--modes <list>', 'measurements: T, L or T,L', 'T,L')
    .option('--concurrency <n>', 'worker slots per stage (its own process in pipeline3)', '256')
    .option('--no-sync', 'do not fsync the status store (for the non-durable peers)')
    .option('--json', "one JSON line per measurement, in the peers' shape")
    .option(
      '--tracing <when>',
      'off, on (every process exports OTLP to a receiver in this process), or both: untraced and traced runs alternate, and a last line gives what tracing cost, pair by pair',
      'off',
    )
    .option(
      '--runs-file <path>',
      'append every run as a JSON line, with each process its peak RSS and CPU seconds',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  $ dsat bench --json\n  $ dsat bench --tasks 500 --runs 1 --modes T\n  $ dsat bench --modes T --runs-file runs.jsonl   # per-process CPU and memory\n  $ dsat bench --modes L --rate 50,200,1000 --json   # latency against load\n  $ dsat bench --pipeline pipelines/demo.yaml --payload \'{"text":"hi"}\' --tasks 2000 --window 50\n  $ dsat bench --pipeline demo --router 10.0.0.5:7402 --status 10.0.0.5:7401 --json\n  $ dsat bench --pipeline pipelines/etl.yaml --embedded --stage-ms 20   # no mesh needed\n  $ dsat bench --pipeline pipelines/etl.yaml --embedded --handler ./handlers.js\n\nEnvironment:\n  DSAT_BENCH_NODE_ARGS  node flags for the services pipeline3 starts (status, router, tracker,\n                        workers); each also gets --max-semi-space-size=4 and\n                        --heap-growing-percent=200 unless this sets them. E.g.\n                        "--cpu-prof --cpu-prof-dir=prof" profiles each service',
    )
    .action(async (_opts: unknown, command: Command) => {
      // --json is also a global option of dsat; read both levels.
      const opts = command.optsWithGlobals<Record<string, string | boolean>>();
      const explicit = (o: string) => command.getOptionValueSource(o) === 'cli';
      const embedded = opts.embedded === true;
      if (typeof opts.pipeline !== 'string') {
        refuse(EMBEDDED_ONLY.filter(explicit), 'to --pipeline FILE only');
      } else {
        refuse(
          WORKLOAD_ONLY.filter(explicit),
          'to the built-in workload only, not with --pipeline',
        );
        if (!embedded) {
          refuse(EMBEDDED_ONLY.filter(explicit), 'to --embedded only');
          refuse(OWN_MESH_ONLY.filter(explicit), 'to --embedded only, not to a running mesh');
        } else {
          const global = (o: string) => command.getOptionValueSourceWithGlobals(o) === 'cli';
          refuse(MESH_ADDRESSES.filter(global), 'to a running mesh, not with --embedded');
          if (explicit('handler') && explicit('stageMs')) {
            refuse(['stageMs'], 'to synthetic handlers only, not with --handler');
          }
          if (!isFile(opts.pipeline)) {
            process.stderr.write(
              `dsat: --embedded runs a pipeline file; ${JSON.stringify(opts.pipeline)} is not one\n`,
            );
            process.exit(2);
          }
        }
        const load: PipelineBench = {
          source: opts.pipeline,
          tasks: wholeNumber(explicit('tasks') ? opts.tasks : 1000, 'tasks'),
          window: wholeNumber(explicit('window') ? opts.window : 100, 'window'),
          stallMs: wholeNumber(opts.stallTimeout, 'stall-timeout') * 1000,
          payload: String(opts.payload),
          contentType: typeof opts.contentType === 'string' ? opts.contentType : undefined,
        };
        if (embedded) {
          await benchEmbedded(load, {
            sync: opts.sync !== false,
            concurrency: wholeNumber(opts.concurrency, 'concurrency'),
            handlerFile: typeof opts.handler === 'string' ? opts.handler : undefined,
            stageMs: wholeNumber(opts.stageMs, 'stage-ms', 0),
            json: opts.json === true,
          });
        } else {
          await meshAction((ctx, _command: Command) => benchPipeline(ctx, load))(command);
        }
        return;
      }
      if (opts.workload !== 'pipeline3') {
        process.stderr.write(
          `dsat: unknown workload ${JSON.stringify(opts.workload)}; the built-in one is pipeline3\n`,
        );
        process.exit(2);
      }
      const modes = String(opts.modes)
        .split(',')
        .map((m) => m.trim().toUpperCase());
      if (modes.some((m) => m !== 'T' && m !== 'L')) {
        process.stderr.write('dsat: --modes takes T, L or T,L\n');
        process.exit(2);
      }
      const tracing = String(opts.tracing);
      if (!['off', 'on', 'both'].includes(tracing)) {
        process.stderr.write('dsat: --tracing takes off, on or both\n');
        process.exit(2);
      }
      let barShown = false;
      const base: BenchOptions = {
        tasks: wholeNumber(opts.tasks, 'tasks'),
        window: wholeNumber(opts.window, 'window'),
        rates: String(opts.rate)
          .split(',')
          .map((r) => wholeNumber(r.trim(), 'rate')),
        durationS: wholeNumber(opts.duration, 'duration'),
        warmup: wholeNumber(opts.warmup, 'warmup', 0),
        runs: wholeNumber(opts.runs, 'runs'),
        modes: modes as ('T' | 'L')[],
        sync: opts.sync !== false,
        concurrency: wholeNumber(opts.concurrency, 'concurrency'),
        progress: (line) => {
          if (barShown) process.stderr.write('\r\x1b[2K');
          barShown = false;
          process.stderr.write(`dsat bench: ${line}\n`);
        },
        // A live bar only on a terminal: logs and CI keep one line per run.
        onTasks: process.stderr.isTTY
          ? (run, done, total) => {
              barShown = true;
              process.stderr.write(`\r\x1b[2Kdsat bench: ${run} ${progressBar(done, total)}`);
            }
          : undefined,
      };
      const result =
        tracing === 'off'
          ? { ...(await runPipeline3(base)), costs: [] }
          : await runTraced(base, tracing === 'both');
      if (typeof opts.runsFile === 'string') {
        fs.appendFileSync(opts.runsFile, result.runs.map((r) => JSON.stringify(r) + '\n').join(''));
      }
      for (const s of result.summaries) {
        if (opts.json) printJson(s);
        else {
          const figure =
            'tasks_per_s' in s
              ? `${String(s.tasks_per_s?.median)} tasks/s`
              : `p50 ${String(s.p50_ms?.median)} ms, p99 ${String(s.p99_ms?.median)} ms`;
          process.stdout.write(
            `${s.system} ${lineLabel(s)}: ${figure}, ${String(s.cpu_ms_per_task?.median)} CPU ms/task, peak RSS ${String(s.peak_rss_system_mb?.median)} MB, lost ${s.lost_total}, dups ${s.dups_total}\n`,
          );
        }
      }
      for (const c of result.costs) {
        if (opts.json) printJson(c);
        else {
          const range = (
            a: { median: number | null; min?: number; max?: number } | null,
            unit: string,
          ) => (a ? `${String(a.median)}${unit} (${String(a.min)} to ${String(a.max)})` : 'n/a');
          const effect =
            'throughput_drop_pct' in c
              ? `throughput ${range(c.throughput_drop_pct, '%')} lower`
              : `p99 ${range(c.p99_ms_added, ' ms')} higher`;
          process.stdout.write(
            `tracing cost ${lineLabel(c)}, median of ${c.pairs} pair${c.pairs === 1 ? '' : 's'}: ${effect}, CPU per task ${range(c.cpu_ms_per_task_added, ' ms')} more\n`,
          );
        }
      }
      const bad = result.summaries.some(
        (s) => s.lost_total > 0 || s.dups_total > 0 || s.bad_total > 0 || s.errors.length > 0,
      );
      process.exit(bad ? 1 : 0);
    });
}

/**
 * The benchmark with tracing on: every dsat process exports its spans over OTLP/HTTP (the default
 * protobuf) to a receiver in this process, as to `dsat up`'s, which holds the requests and decodes
 * them after each run (a collector elsewhere would not share these two cores). With `both`,
 * untraced and traced runs alternate (plain first in odd pairs, traced first in even ones), so
 * that both see the same machine.
 */
/** The measurement a summary or tracing-cost line is about, named as the progress lines name it. */
function lineLabel(line: { readonly measurement: 'T' | 'L'; readonly offered_rate?: number }) {
  return measurementLabel({ mode: line.measurement, rate: line.offered_rate });
}

async function runTraced(base: BenchOptions, both: boolean) {
  const spans = new SpanStore(2_000_000);
  const receiver = await startOtlpReceiver(spans, {
    host: '127.0.0.1',
    port: 0,
    logger: createLogger('bench', 'warn'),
    deferDecoding: true,
  });
  const system = systemName(base.sync);
  const traced: BenchOptions = {
    ...base,
    system: `${system}-traced`,
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      // The traced runs measure tracing alone; the receiver takes no metrics.
      OTEL_METRICS_EXPORTER: process.env.OTEL_METRICS_EXPORTER ?? 'none',
      // Big, frequent batches: the default queue of 2048 would drop spans, and cost less. Values
      // set in the environment win, to measure other settings.
      OTEL_BSP_SCHEDULE_DELAY: process.env.OTEL_BSP_SCHEDULE_DELAY ?? '500',
      OTEL_BSP_MAX_QUEUE_SIZE: process.env.OTEL_BSP_MAX_QUEUE_SIZE ?? '200000',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: process.env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE ?? '4096',
    },
  };
  const plain: BenchOptions = { ...base, system };
  const out = {
    runs: [] as RunRecord[],
    summaries: [] as ReturnType<typeof summarize>[],
    costs: [] as ReturnType<typeof summarizeTracingCost>[],
  };
  try {
    for (const m of measurements(base.modes, base.rates)) {
      const bySystem = new Map<string, RunRecord[]>();
      for (let rep = 1; rep <= base.runs; rep++) {
        // Each pair in the other order from the last, so that neither kind always runs second.
        const order = rep % 2 === 1 ? [plain, traced] : [traced, plain];
        for (const opts of both ? order : [traced]) {
          const { runs } = await runPipeline3({
            ...opts,
            modes: [m.mode],
            rates: m.mode === 'L' ? [m.rate] : opts.rates,
            runs: 1,
          });
          const run: RunRecord = { ...runs[0]!, rep };
          if (opts === traced) {
            run.spans_received = receiver.decodeHeld();
            run.traces_received = spans.traceCount;
            // Spans kept from run to run would make the receiver's garbage collection, on the
            // same two cores, slow each traced run more than the last.
            spans.clear();
          }
          out.runs.push(run);
          bySystem.set(opts.system!, [...(bySystem.get(opts.system!) ?? []), run]);
        }
      }
      for (const [name, runs] of bySystem) out.summaries.push(summarize(name, m, runs));
      if (both) {
        out.costs.push(
          summarizeTracingCost(
            system,
            m,
            bySystem.get(plain.system!) ?? [],
            bySystem.get(traced.system!) ?? [],
          ),
        );
      }
    }
  } finally {
    await receiver.close();
  }
  return out;
}

interface PipelineBench {
  readonly source: string;
  readonly tasks: number;
  readonly window: number;
  readonly stallMs: number;
  readonly payload: string;
  readonly contentType: string | undefined;
}

const isFile = (p: string) => fs.existsSync(p) && fs.statSync(p).isFile();

/** `dsat bench --pipeline`: a pipeline of a running mesh under synthetic load, stage by stage. */
async function benchPipeline(ctx: CommandContext, load: PipelineBench): Promise<void> {
  let name = load.source;
  if (isFile(load.source)) {
    const res = await ctx.clients.tracker.applyPipeline({
      pipeline: readPipelineFile(load.source),
      validateOnly: false,
    });
    name = res.pipeline?.name ?? '';
    if (!ctx.json) {
      process.stderr.write(
        `dsat bench: ${res.changed ? 'applied' : 'unchanged'} ${name} v${res.pipeline?.version}\n`,
      );
    }
  } else {
    // Fails with NOT_FOUND naming the pipeline before any task is sent.
    await ctx.clients.tracker.getPipeline({ name, version: 0 });
  }
  await loadAndReport(ctx.clients, name, load, ctx.json, "are the pipeline's workers running?");
}

/** `dsat bench --pipeline FILE --embedded`: the same on a mesh of its own, in this process. */
async function benchEmbedded(
  load: PipelineBench,
  mesh: Omit<EmbeddedMeshOptions, 'pipeline' | 'logger'> & { json: boolean },
): Promise<void> {
  let started: EmbeddedMesh | undefined;
  try {
    started = await startEmbeddedMesh({
      ...mesh,
      pipeline: readPipelineFile(load.source),
      // Not warn: a pipeline whose tasks fail would log each; the report lists the first five.
      logger: createLogger('dsat-bench', 'error'),
    });
    if (!mesh.json) {
      const workers = mesh.handlerFile ?? `synthetic, ${mesh.stageMs} ms per attempt`;
      process.stderr.write(
        `dsat bench: embedded mesh (sync ${mesh.sync ? 'on' : 'off'}, store in ${started.dataDir}), pipeline ${started.pipeline.name} v${started.pipeline.version}, one worker per stage with ${mesh.concurrency} slots (${workers})\n`,
      );
    }
    await loadAndReport(
      started.clients,
      started.pipeline.name,
      load,
      mesh.json,
      'do its handlers end?',
    );
  } catch (err) {
    process.stderr.write(`dsat: ${describeError(err)}\n`);
    process.exitCode = 1;
  } finally {
    await started?.stop();
  }
  process.exit(process.exitCode ?? 0);
}

/** Runs the load, prints the report; throws when a task failed or was lost. */
async function loadAndReport(
  clients: MeshClients,
  name: string,
  load: PipelineBench,
  json: boolean,
  stallHint: string,
): Promise<void> {
  const payload = readPayload(load.payload);
  const tty = process.stderr.isTTY && !json;
  const result = await runPipelineLoad(clients, {
    pipeline: name,
    tasks: load.tasks,
    window: load.window,
    payload,
    contentType: load.contentType ?? guessContentType(payload),
    stallMs: load.stallMs,
    onProgress: tty
      ? (ended, total) =>
          process.stderr.write(`\r\x1b[2Kdsat bench: ${name} ${progressBar(ended, total)}`)
      : undefined,
  });
  if (tty) process.stderr.write('\r\x1b[2K');
  if (json) printJson(result);
  else process.stdout.write(pipelineReport(result));
  if (result.lost > 0 || result.failed > 0) {
    throw new Error(
      result.gave_up
        ? `no task ended for ${load.stallMs / 1000} s, ${result.lost} of ${result.tasks} had not ended (${stallHint})`
        : `${result.failed} of ${result.tasks} tasks did not succeed`,
    );
  }
}

function pipelineReport(r: PipelineLoadResult): string {
  const ms = (v: number | null) => (v === null ? '-' : String(v));
  const lines = [
    `pipeline ${r.pipeline}: ${r.tasks} tasks, at most ${r.window} in flight`,
    `  ${r.succeeded} succeeded, ${r.failed} failed, ${r.lost} lost in ${r.duration_s} s: ${r.tasks_per_s ?? '-'} tasks/s`,
    `  end to end ms: p50 ${ms(r.end_to_end_ms.p50)}, p90 ${ms(r.end_to_end_ms.p90)}, p99 ${ms(r.end_to_end_ms.p99)}, max ${ms(r.end_to_end_ms.max)}`,
    table(
      ['stage', 'tasks', 'attempts', 'queued p50 / p99 ms', 'running p50 / p99 ms'],
      r.stages.map((s) => [
        s.stage,
        s.tasks,
        s.attempts,
        `${ms(s.queue_ms.p50)} / ${ms(s.queue_ms.p99)}`,
        `${ms(s.run_ms.p50)} / ${ms(s.run_ms.p99)}`,
      ]),
    ),
    ...r.failures.map((f) => `  ${f}`),
  ];
  return lines.join('\n') + '\n';
}
