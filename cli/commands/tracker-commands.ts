import { Command } from 'commander';
import { ClientError, Status } from 'nice-grpc-common';
import type { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import { Decorator } from '../../gen/dsat/pipeline/v1/pipeline';
import type { GetMeshResponse } from '../../gen/dsat/tracker/v1/tracker';
import { MemberKind, ScalingAction } from '../../gen/dsat/tracker/v1/tracker';
import { TaskState } from '../../gen/dsat/task/v1/task';
import type { Duration } from '../../gen/google/protobuf/duration';
import type { CommandContext } from '../command-context';
import { meshAction, UsageError } from '../command-context';
import { parseWholeNumber, wholeNumberOption } from '../number-options';
import { isTerminalState } from '../../services/status/task-state-machine';
import { printJson, stageGraph, stateName, table, taskJson } from '../output';

function duration(d: Duration | undefined): string {
  if (!d || (d.seconds === 0 && d.nanos === 0)) return '';
  const ms = d.seconds * 1000 + d.nanos / 1e6;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

export function pipelineJson(p: Pipeline) {
  return {
    name: p.name,
    version: p.version,
    description: p.description,
    entry_stage: p.entryStage || undefined,
    max_hops: p.maxHops || undefined,
    created_at: p.createdAt?.toISOString(),
    stages: p.stages.map((s) => ({
      name: s.name,
      next: s.next,
      queue_timeout: duration(s.queueTimeout) || undefined,
      run_timeout: duration(s.runTimeout) || undefined,
      heartbeat_timeout: duration(s.heartbeatTimeout) || undefined,
      async_timeout: duration(s.asyncTimeout) || undefined,
      max_attempts: s.maxAttempts || undefined,
      non_retryable_errors: s.nonRetryableErrors.length ? s.nonRetryableErrors : undefined,
      concurrency: s.concurrency || undefined,
      decorators: s.decorators.length
        ? s.decorators.map((d) => Decorator[d]?.replace('DECORATOR_', '') ?? String(d))
        : undefined,
    })),
  };
}

function printPipeline(ctx: CommandContext, p: Pipeline): void {
  if (ctx.json) return printJson(pipelineJson(p));
  process.stdout.write(
    `pipeline ${p.name} v${p.version}${p.description ? ` — ${p.description}` : ''}\n`,
  );
  process.stdout.write(
    table(
      ['stage', 'next', 'run timeout', 'heartbeat', 'attempts', 'decorators'],
      pipelineJson(p).stages.map((s) => [
        s.name,
        s.next.join(', '),
        s.run_timeout ?? '',
        s.heartbeat_timeout ?? '',
        s.max_attempts ?? 3,
        (s.decorators ?? []).join(', '),
      ]),
    ) + '\n',
  );
}

const kindName = (kind: MemberKind) =>
  MemberKind[kind]?.replace('MEMBER_KIND_', '').toLowerCase() ?? String(kind);
const actionName = (action: ScalingAction) =>
  ScalingAction[action]?.replace('SCALING_ACTION_', '') ?? String(action);

/** The mesh for scripts: enums by the names the table shows, not their numbers. */
function meshJson(mesh: GetMeshResponse) {
  return {
    members: mesh.members.map((m) => ({ ...m, kind: kindName(m.kind) })),
    stages: mesh.stages.map((s) => ({
      ...s,
      advice: s.advice && { ...s.advice, action: actionName(s.advice.action) },
    })),
  };
}

function meshRows(mesh: GetMeshResponse) {
  return mesh.stages.map((s) => [
    s.stage,
    s.workers,
    s.freeCredit,
    s.inFlight,
    s.queueDepth,
    s.throughputPerS.toFixed(1),
    `${(s.errorRate * 100).toFixed(1)}%`,
    s.advice ? `${actionName(s.advice.action)} ${s.advice.desiredWorkers || ''}`.trim() : '',
  ]);
}

function renderMesh(mesh: GetMeshResponse): string {
  const members = table(
    ['member', 'kind', 'address', 'stages', 'last seen'],
    mesh.members.map((m) => [
      m.memberId,
      kindName(m.kind),
      m.address,
      m.stages.join(', ') || '*',
      m.lastSeenAt?.toISOString().slice(11, 19) ?? '',
    ]),
  );
  const stages = table(
    ['stage', 'workers', 'free credit', 'in flight', 'queued', 'tasks/s', 'errors', 'advice'],
    meshRows(mesh),
  );
  return `${members}\n${stages}\n`;
}

export function trackerCommands(applyPipelineFile?: (file: string) => Pipeline): Command[] {
  const pipelines = new Command('pipelines').description('Apply, list and show pipelines.');
  pipelines
    .command('list')
    .description('List pipelines (latest versions).')
    .action(
      meshAction(async (ctx) => {
        const { pipelines: list } = await ctx.clients.tracker.listPipelines({ pageSize: 1000 });
        if (ctx.json) return printJson(list.map(pipelineJson));
        process.stdout.write(
          table(
            ['pipeline', 'version', 'stages', 'created'],
            list.map((p) => [p.name, p.version, stageGraph(p), p.createdAt?.toISOString() ?? '']),
            'no pipelines yet: apply one with dsat pipelines apply FILE',
          ) + '\n',
        );
      }),
    );
  pipelines
    .command('get')
    .description('Show one pipeline.')
    .argument('<name>')
    // Not --version: that is dsat's own flag, wherever it stands on the command line.
    .argument('[version]', 'a given version (default: the latest)', (v) =>
      parseWholeNumber(v, 1, 2 ** 32 - 1),
    )
    .addHelpText('after', '\nExamples:\n  $ dsat pipelines get demo\n  $ dsat pipelines get demo 2')
    .action(
      meshAction(async (ctx, name: string, version: number | undefined) => {
        const { pipeline } = await ctx.clients.tracker.getPipeline({ name, version: version ?? 0 });
        if (!pipeline) throw new Error(`pipeline ${name} not found`);
        printPipeline(ctx, pipeline);
      }),
    );
  if (applyPipelineFile) {
    pipelines
      .command('apply')
      .description('Validate a pipeline file (YAML or JSON) and store it as a new version.')
      .argument('<file>')
      .option('--dry-run', 'validate only')
      .addHelpText('after', '\nExample:\n  $ dsat pipelines apply pipelines/demo.yaml')
      .action(
        meshAction(async (ctx, file: string, opts: { dryRun?: boolean }) => {
          const res = await ctx.clients.tracker.applyPipeline({
            pipeline: applyPipelineFile(file),
            validateOnly: opts.dryRun === true,
          });
          if (ctx.json)
            return printJson({
              changed: res.changed,
              pipeline: res.pipeline && pipelineJson(res.pipeline),
            });
          const p = res.pipeline;
          process.stdout.write(
            opts.dryRun
              ? `${file} is valid\n`
              : res.changed
                ? `applied ${p?.name} v${p?.version}\n`
                : `${p?.name} v${p?.version} is unchanged\n`,
          );
        }),
      );
  }

  const deadLetters = new Command('dead-letters').description(
    'List, redrive and purge dead-lettered tasks.',
  );
  deadLetters
    .command('list')
    .description('List dead-lettered tasks with their last error.')
    .option('--pipeline <name>')
    .option('--stage <name>')
    .addOption(wholeNumberOption('--limit <n>', 'at most this many', 50, 1, 10_000))
    .action(
      meshAction(async (ctx, opts: { pipeline?: string; stage?: string; limit: number }) => {
        const res = await ctx.clients.tracker.listDeadLettered({
          pipeline: opts.pipeline ?? '',
          stage: opts.stage ?? '',
          pageSize: opts.limit,
        });
        if (ctx.json)
          return printJson({ tasks: res.tasks.map(taskJson), nextPageToken: res.nextPageToken });
        process.stdout.write(
          table(
            ['task', 'pipeline', 'stage', 'attempts', 'last error'],
            res.tasks.map((t) => [
              t.taskId,
              t.pipeline,
              t.stage,
              t.attempt,
              `${t.lastError?.code ?? ''} ${t.lastError?.message ?? ''}`.trim(),
            ]),
            'no dead-lettered tasks',
          ) + '\n',
        );
      }),
    );
  deadLetters
    .command('redrive')
    .description('Queue dead-lettered tasks again with a fresh attempt budget.')
    .argument('[task-ids...]')
    .option('--pipeline <name>', 'every dead-lettered task of this pipeline')
    .option('--stage <name>', 'every dead-lettered task at this stage')
    .action(
      meshAction(async (ctx, taskIds: string[], opts: { pipeline?: string; stage?: string }) => {
        if (taskIds.length === 0 && !opts.pipeline && !opts.stage) {
          throw new UsageError('dead-letters redrive: name task ids, --pipeline or --stage');
        }
        const res = await ctx.clients.tracker.redriveTasks({
          taskIds,
          filter: {
            pipeline: opts.pipeline ?? '',
            stage: opts.stage ?? '',
            states: [],
            actionKey: '',
          },
        });
        // The tracker skips a named task that is not dead-lettered; say which, and fail.
        const redriven = new Set(res.taskIds);
        const skipped = taskIds.filter((id) => !redriven.has(id));
        if (skipped.length > 0) process.exitCode = 1;
        if (ctx.json) return printJson({ ...res, skippedTaskIds: skipped });
        process.stdout.write(`redriven ${res.taskIds.length} task(s)\n`);
        if (skipped.length > 0) {
          process.stderr.write(
            `dsat: not redriven, not dead-lettered (unknown, running or ended otherwise): ${skipped.join(', ')}\n`,
          );
        }
      }),
    );
  deadLetters
    .command('purge')
    .description('Delete dead-lettered (or other terminal) tasks.')
    .argument('[task-ids...]')
    .option('--pipeline <name>', 'every dead-lettered task of this pipeline')
    .action(
      meshAction(async (ctx, taskIds: string[], opts: { pipeline?: string }) => {
        if (taskIds.length === 0 && !opts.pipeline) {
          throw new UsageError('dead-letters purge: name task ids or --pipeline');
        }
        // The tracker answers with a count only: say which named tasks it would skip, and why.
        const skipped = await unpurgeable(ctx, taskIds);
        const res = await ctx.clients.tracker.purgeTasks({
          taskIds,
          filter: opts.pipeline
            ? {
                pipeline: opts.pipeline,
                stage: '',
                states: [TaskState.TASK_STATE_DEAD_LETTERED],
                actionKey: '',
              }
            : undefined,
        });
        if (skipped.length > 0) process.exitCode = 1;
        if (ctx.json)
          return printJson({ ...res, skipped: skipped.map(([taskId, why]) => ({ taskId, why })) });
        process.stdout.write(`purged ${res.purgedCount} task(s)\n`);
        for (const [taskId, why] of skipped) {
          process.stderr.write(`dsat: not purged, ${why}: ${taskId}\n`);
        }
      }),
    );

  const mesh = new Command('mesh')
    .alias('top')
    .description('Members of the mesh and the load of every stage, with scaling advice.')
    .option('-w, --watch', 'refresh every second, like top')
    .addOption(
      wholeNumberOption(
        '--interval <ms>',
        'with --watch: milliseconds between refreshes, at least 100',
        1000,
        100,
      ),
    )
    .action(
      meshAction(async (ctx, opts: { watch?: boolean; interval: number }) => {
        for (;;) {
          const res = await ctx.clients.tracker.getMesh({});
          if (ctx.json) printJson(meshJson(res));
          else {
            if (opts.watch) process.stdout.write('\x1b[2J\x1b[H');
            process.stdout.write(renderMesh(res));
          }
          if (!opts.watch) return;
          await new Promise((r) => setTimeout(r, opts.interval));
        }
      }),
    );
  return [pipelines, deadLetters, mesh];
}

/** The named tasks a purge leaves alone: unknown ones, and those not ended yet. */
async function unpurgeable(ctx: CommandContext, taskIds: string[]): Promise<[string, string][]> {
  const skipped: [string, string][] = [];
  for (const taskId of taskIds) {
    try {
      const { task } = await ctx.clients.status.getTask({ taskId });
      if (task && !isTerminalState(task.state)) {
        skipped.push([taskId, `it is ${stateName(task.state)}, not ended`]);
      }
    } catch (err) {
      if (!(err instanceof ClientError) || err.code !== Status.NOT_FOUND) throw err;
      skipped.push([taskId, 'no such task']);
    }
  }
  return skipped;
}
