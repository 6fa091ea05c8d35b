import fs from 'node:fs';
import { Command } from 'commander';
import { runPipeline3 } from '../../bench/pipeline3/orchestrator';
import { printJson } from '../output';

/** `dsat bench`: the peers' pipeline3 workload against a mesh of separate processes. */
export function benchCommand(): Command {
  return new Command('bench')
    .description(
      "Run the pipeline3 benchmark (the peers' workload): status, router, tracker and one worker per stage as separate processes; T = closed-loop throughput, L = open-loop latency.",
    )
    .option('--workload <name>', 'built-in workload', 'pipeline3')
    .option('--tasks <n>', 'tasks in a T run', '20000')
    .option('--window <n>', 'most tasks in flight in a T run', '2000')
    .option('--rate <n>', 'tasks per second in an L run', '1000')
    .option('--duration <s>', 'seconds of an L run', '10')
    .option('--warmup <n>', 'tasks before each measured run', '1000')
    .option('--runs <n>', 'runs of each measurement', '3')
    .option('--modes <list>', 'measurements: T, L or T,L', 'T,L')
    .option('--concurrency <n>', 'worker slots per stage process', '256')
    .option('--no-sync', 'do not fsync the status store (for the non-durable peers)')
    .option('--json', "one JSON line per measurement, in the peers' shape")
    .option(
      '--runs-file <path>',
      'append every run as a JSON line, with each process its peak RSS and CPU seconds',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  $ dsat bench --json\n  $ dsat bench --tasks 500 --runs 1 --modes T\n  $ dsat bench --modes T --runs-file runs.jsonl   # per-process CPU and memory',
    )
    .action(async (_opts: unknown, command: Command) => {
      // --json is also a global option of dsat; read both levels.
      const opts = command.optsWithGlobals<Record<string, string | boolean>>();
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
      const result = await runPipeline3({
        tasks: Number(opts.tasks),
        window: Number(opts.window),
        rate: Number(opts.rate),
        durationS: Number(opts.duration),
        warmup: Number(opts.warmup),
        runs: Number(opts.runs),
        modes: modes as ('T' | 'L')[],
        sync: opts.sync !== false,
        concurrency: Number(opts.concurrency),
        progress: (line) => process.stderr.write(`dsat bench: ${line}\n`),
      });
      if (typeof opts.runsFile === 'string') {
        fs.appendFileSync(opts.runsFile, result.runs.map((r) => JSON.stringify(r) + '\n').join(''));
      }
      for (const s of result.summaries) {
        if (opts.json) printJson(s);
        else {
          const figure =
            s.measurement === 'T'
              ? `${String((s as { tasks_per_s?: { median: number } }).tasks_per_s?.median)} tasks/s`
              : `p50 ${String((s as { p50_ms?: { median: number } }).p50_ms?.median)} ms, p99 ${String((s as { p99_ms?: { median: number } }).p99_ms?.median)} ms`;
          process.stdout.write(
            `${s.system} ${s.measurement}: ${figure}, ${String(s.cpu_ms_per_task?.median)} CPU ms/task, peak RSS ${String(s.peak_rss_system_mb?.median)} MB, lost ${s.lost_total}, dups ${s.dups_total}\n`,
          );
        }
      }
      const bad = result.summaries.some(
        (s) => s.lost_total > 0 || s.dups_total > 0 || s.bad_total > 0 || s.errors.length > 0,
      );
      process.exit(bad ? 1 : 0);
    });
}
