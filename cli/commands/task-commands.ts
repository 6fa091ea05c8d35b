import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ClientError, Status } from 'nice-grpc-common';
import type { Task } from '../../gen/dsat/task/v1/task';
import { TaskState, Transition } from '../../gen/dsat/task/v1/task';
import type { StoredSpan } from '../../services/shared/span-store';
import { MAX_PRIORITY } from '../../services/router/task-intake';
import { isTerminalState } from '../../services/status/task-state-machine';
import { transitionFieldProblem } from '../../services/status/transition-mask';
import type { CommandContext } from '../command-context';
import { meshAction } from '../command-context';
import { wholeNumberOption } from '../number-options';
import {
  printJson,
  showPayload,
  stateName,
  table,
  taskJson,
  transitionJson,
  transitionLine,
} from '../output';
import { renderWaterfall } from '../waterfall';

/** The spans of one trace from the span receiver of `dsat up`, within the call deadline. */
async function fetchSpans(base: string, traceId: string, timeoutMs: number): Promise<StoredSpan[]> {
  const url = `${base.replace(/\/$/, '')}/dsat/traces/${traceId}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const why =
      (err as Error).name === 'TimeoutError'
        ? `no answer within ${timeoutMs} ms`
        : String((err as Error).cause ?? err);
    throw new Error(
      `cannot reach the span receiver at ${base} (${why}); is dsat up running with tracing on?`,
    );
  }
  const body = (await res.json().catch(() => undefined)) as
    { spans?: StoredSpan[]; message?: string } | undefined;
  if (!res.ok || !Array.isArray(body?.spans)) {
    throw new Error(
      `the span receiver at ${base} answered ${res.status}${body?.message ? `: ${body.message}` : ''}; is --traces the address dsat up printed?`,
    );
  }
  return body.spans;
}

/** A payload given as text, `@file`, or `-` for stdin. */
export function readPayload(arg: string): Buffer {
  if (arg === '-') return fs.readFileSync(0);
  if (arg.startsWith('@')) {
    const file = arg.slice(1);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'a directory' : e.message;
      throw new Error(`cannot read the payload file ${file}: ${why}`);
    }
  }
  return Buffer.from(arg, 'utf8');
}

export function guessContentType(data: Buffer): string {
  try {
    JSON.parse(data.toString('utf8'));
    return 'application/json';
  } catch {
    return data.every((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b !== 127))
      ? 'text/plain'
      : 'application/octet-stream';
  }
}

function parseState(s: string): TaskState {
  const key = `TASK_STATE_${s.toUpperCase()}` as keyof typeof TaskState;
  const v = TaskState[key];
  if (typeof v !== 'number' || v === TaskState.TASK_STATE_UNSPECIFIED) {
    throw new InvalidArgumentError(
      `unknown state ${JSON.stringify(s)}: use one of ${Object.keys(TaskState)
        .filter((k) => k.startsWith('TASK_STATE_') && !k.endsWith('UNSPECIFIED'))
        .map((k) => k.slice(11).toLowerCase())
        .join(', ')}`,
    );
  }
  return v;
}

/** `--fields`: names, repeated or comma-separated, each a Transition field. */
function transitionFields(value: string, previous: string[] | undefined): string[] {
  const names = value.split(',').filter(Boolean);
  for (const name of names) {
    const problem = transitionFieldProblem(name);
    if (problem !== undefined) throw new InvalidArgumentError(problem);
  }
  return [...(previous ?? []), ...names];
}

/** `--state a b` as TaskStates: a state that does not exist is a usage error naming the flag. */
function stateOption(flags: string, description: string): Option {
  return new Option(flags, description).argParser(
    (value: string, previous: TaskState[] | undefined) => [...(previous ?? []), parseState(value)],
  );
}

/**
 * Follows a task until its terminal state, printing each transition; returns the final record.
 * `fromStart` prints its history first (a task just submitted may have moved on already), then
 * watches from the newest transition printed.
 */
async function follow(
  ctx: CommandContext,
  taskId: string,
  fromStart = false,
  label = '',
): Promise<Task> {
  let fromRevision = 0;
  const print = (t: Transition) => {
    if (ctx.json) printJson(transitionJson(t));
    else process.stdout.write(label + transitionLine(t) + '\n');
  };
  if (fromStart) {
    const { transitions } = await ctx.clients.status.getTaskHistory({ taskId });
    for (const t of transitions) {
      print(t);
      fromRevision = Math.max(fromRevision, t.revision);
      if (isTerminalState(t.toState)) return (await ctx.clients.status.getTask({ taskId })).task!;
    }
  }
  return resumingWatch(`the watch of task ${taskId}`, async (progressed) => {
    for await (const event of ctx.clients.status.watchTask({ taskId, fromRevision })) {
      progressed();
      if (event.event?.$case === 'snapshot') {
        const last = event.event.value;
        fromRevision = last.revision;
        if (!ctx.json)
          process.stdout.write(
            `${label}task ${taskId} is ${stateName(last.state)} at ${last.stage}\n`,
          );
        else printJson({ snapshot: taskJson(last) });
        if (isTerminalState(last.state)) return last;
      } else if (event.event?.$case === 'transition') {
        const t: Transition = event.event.value;
        fromRevision = t.revision;
        print(t);
        if (isTerminalState(t.toState)) return (await ctx.clients.status.getTask({ taskId })).task!;
      }
    }
    return undefined;
  });
}

/**
 * Runs a watch until `once` returns a value, resuming it (each try picks up where the last one
 * left off) when it breaks or ends early, as when the status service restarts. Gives up after
 * `tries` breaks in a row with no progress in between, with the last error.
 */
async function resumingWatch<T>(
  what: string,
  once: (progressed: () => void) => Promise<T | undefined>,
  tries = 4,
): Promise<T> {
  let failures = 0;
  const progressed = () => {
    failures = 0;
  };
  for (;;) {
    let why: unknown;
    try {
      const done = await once(progressed);
      if (done !== undefined) return done;
      why = new Error(`${what} ended early: the status service stopped or closed it`);
    } catch (err) {
      why = err;
    }
    if (++failures >= tries) throw why;
    await new Promise((r) => setTimeout(r, 250 * failures));
  }
}

/**
 * Follows the branches a task's fan-outs started (and theirs) to their end, one after the other,
 * each line marked with the branch; returns the final records.
 */
async function followBranches(ctx: CommandContext, task: Task): Promise<Task[]> {
  const ended: Task[] = [];
  const todo = task.branches.map((b) => b.branchId);
  for (let id = todo.shift(); id !== undefined; id = todo.shift()) {
    const final = await follow(ctx, id, true, `[branch ${id}] `);
    if (final === undefined) continue;
    ended.push(final);
    todo.push(...final.branches.map((b) => b.branchId));
  }
  return ended;
}

function finalLine(label: string, t: Task): string {
  let line = `${label}${stateName(t.state)}`;
  if (t.output?.data.length) line += `: ${showPayload(t.output)}`;
  if (t.lastError?.message) line += `: ${t.lastError.code} ${t.lastError.message}`;
  return line + '\n';
}

function printTask(ctx: CommandContext, t: Task): void {
  if (ctx.json) return printJson(taskJson(t));
  const rows: [string, string][] = [
    ['task', t.taskId],
    ['pipeline', `${t.pipeline} v${t.pipelineVersion}`],
    ['state', stateName(t.state)],
    ['stage', t.stage],
    ['attempt', String(t.attempt)],
    ['trace id', t.traceId],
    ['created', t.createdAt?.toISOString() ?? ''],
    ['updated', t.updatedAt?.toISOString() ?? ''],
  ];
  if (t.parentTaskId) rows.push(['parent', t.parentTaskId]);
  for (const b of t.branches) {
    rows.push([
      'branch',
      `${b.branchId}  ${stateName(b.state)} at ${b.stage}, attempt ${b.attempt}`,
    ]);
  }
  if (t.lastError?.message)
    rows.push(['last error', `${t.lastError.code}: ${t.lastError.message}`]);
  if (t.output?.data.length) rows.push(['output', showPayload(t.output)]);
  else if (t.input?.data.length) rows.push(['input', showPayload(t.input)]);
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(11)} ${v}`).join('\n') + '\n');
}

export function taskCommands(): Command[] {
  const submit = new Command('submit')
    .description(
      'Submit a task to a pipeline; with --follow, print every transition until it ends.',
    )
    .argument('<pipeline>', 'pipeline name')
    .argument('<payload>', 'payload: text, @file, or - for stdin')
    .option(
      '--content-type <type>',
      'payload media type (default: application/json when it parses)',
    )
    .option('--idempotency-key <key>', 'submit at most once with this key')
    .addOption(
      wholeNumberOption(
        '--priority <n>',
        `higher runs first within a stage, from -${MAX_PRIORITY} to ${MAX_PRIORITY}`,
        0,
        -MAX_PRIORITY,
        MAX_PRIORITY,
      ),
    )
    .option(
      '-f, --follow',
      'follow the task (and the branches a fan-out starts) until it ends and print its output; exit code 3 when any does not succeed',
    )
    .addHelpText(
      'after',
      `\nExamples:\n  $ dsat submit demo '{"text":"hi"}' --follow\n  $ dsat submit demo @task.json\n  $ echo hello | dsat submit demo - --content-type text/plain`,
    )
    .action(
      meshAction(
        async (
          ctx,
          pipeline: string,
          payloadArg: string,
          opts: Record<string, string | number | boolean | undefined>,
        ) => {
          const payload = readPayload(payloadArg);
          const res = await ctx.clients.router
            .submitTask({
              pipeline,
              payload,
              contentType: (opts.contentType as string | undefined) ?? guessContentType(payload),
              idempotencyKey: (opts.idempotencyKey as string | undefined) ?? '',
              priority: opts.priority as number,
            })
            .catch((err: unknown) => {
              // grpc-js refuses to send it at all, naming only its own message limit.
              if (
                err instanceof ClientError &&
                err.code === Status.RESOURCE_EXHAUSTED &&
                /message .*larger than/i.test(err.details)
              ) {
                throw new Error(
                  `payload: ${payload.length} bytes is more than one gRPC message carries; a router takes at most its --max-payload-size (1 MiB unless set)`,
                );
              }
              throw err;
            });
          if (ctx.json) printJson(res);
          else
            process.stdout.write(
              `submitted ${res.taskId}${res.duplicate ? ' (already submitted with this key)' : ''}  trace ${res.traceId}\n`,
            );
          if (!opts.follow) return;
          const final = await follow(ctx, res.taskId, true);
          const branches = await followBranches(ctx, final);
          if (!ctx.json) {
            process.stdout.write(finalLine('', final));
            for (const b of branches) process.stdout.write(finalLine(`branch ${b.taskId}: `, b));
          }
          if ([final, ...branches].some((t) => t.state !== TaskState.TASK_STATE_SUCCEEDED)) {
            process.exitCode = 3;
          }
        },
      ),
    );

  const get = new Command('get')
    .description('Show one task: state, stage, attempt, trace id, error, output.')
    .argument('<task-id>')
    .option('--history', 'also print the transition log')
    .action(
      meshAction(async (ctx, taskId: string, opts: { history?: boolean }) => {
        const { task } = await ctx.clients.status.getTask({ taskId });
        if (!task) throw new Error(`task ${taskId} not found`);
        if (!opts.history) return printTask(ctx, task);
        const { transitions } = await ctx.clients.status.getTaskHistory({ taskId });
        if (ctx.json)
          return printJson({ task: taskJson(task), history: transitions.map(transitionJson) });
        printTask(ctx, task);
        process.stdout.write('\n' + transitions.map(transitionLine).join('\n') + '\n');
      }),
    );

  const tasks = new Command('tasks')
    .description('List tasks, newest first, filtered by state, pipeline or stage.')
    .addOption(
      stateOption('--state <state...>', 'only tasks in these states (e.g. running dead_lettered)'),
    )
    .option('--pipeline <name>', 'only tasks of this pipeline')
    .option('--stage <name>', 'only tasks at this stage')
    .addOption(wholeNumberOption('--limit <n>', 'at most this many', 50, 1, 10_000))
    .option('--page-token <token>', 'continue a previous listing')
    .action(
      meshAction(
        async (
          ctx,
          opts: {
            state?: TaskState[];
            pipeline?: string;
            stage?: string;
            limit: number;
            pageToken?: string;
          },
        ) => {
          const res = await ctx.clients.status.listTasks({
            filter: {
              states: opts.state ?? [],
              pipeline: opts.pipeline ?? '',
              stage: opts.stage ?? '',
              actionKey: '',
            },
            pageSize: opts.limit,
            pageToken: opts.pageToken ?? '',
          });
          if (ctx.json)
            return printJson({ tasks: res.tasks.map(taskJson), nextPageToken: res.nextPageToken });
          process.stdout.write(
            table(
              ['task', 'pipeline', 'stage', 'state', 'attempt', 'updated'],
              res.tasks.map((t) => [
                t.taskId,
                t.pipeline,
                t.stage,
                stateName(t.state),
                t.attempt,
                t.updatedAt?.toISOString() ?? '',
              ]),
              'no tasks match',
            ) + '\n',
          );
          if (res.nextPageToken) process.stdout.write(`more: --page-token ${res.nextPageToken}\n`);
        },
      ),
    );

  const watch = new Command('watch')
    .description('Print transitions live: of one task until it ends, or of the whole feed.')
    .addHelpText(
      'after',
      `\nExamples:\n  $ dsat watch TASK_ID\n  $ dsat watch --pipeline demo --state succeeded failed\n  $ dsat watch --json --fields task_id,to_state,stage`,
    )
    .argument('[task-id]', 'the task to follow; without it, the global feed')
    .option('--pipeline <name>', 'feed: only this pipeline')
    .option('--stage <name>', 'feed: only this stage')
    .addOption(stateOption('--state <state...>', 'feed: only transitions into these states'))
    .option(
      '--action-key <key>',
      'feed: only transitions whose action key client?pipeline@decorator?stage matches, * a wildcard (e.g. *?demo@*?hash)',
    )
    .addOption(
      wholeNumberOption(
        '--from-revision <n>',
        'feed: resume after this revision; 0 starts at the end (new transitions only), 1 replays all the feed still holds',
        0,
        0,
      ),
    )
    .addOption(
      new Option(
        '--fields <name...>',
        'feed: the status service sends only these Transition fields, by proto name (e.g. task_id to_state stage); with --json each line is the proto JSON of what was sent',
      ).argParser(transitionFields),
    )
    .action(
      meshAction(
        async (
          ctx,
          taskId: string | undefined,
          opts: {
            pipeline?: string;
            stage?: string;
            state?: TaskState[];
            actionKey?: string;
            fromRevision: number;
            fields?: string[];
          },
        ) => {
          if (taskId) {
            await follow(ctx, taskId);
            return;
          }
          const filter = {
            pipeline: opts.pipeline ?? '',
            stage: opts.stage ?? '',
            states: opts.state ?? [],
            actionKey: opts.actionKey ?? '',
          };
          let fromRevision = opts.fromRevision;
          // The feed has no end: it runs until Ctrl-C, resumed after the revision last seen.
          await resumingWatch<never>('the watch of the feed', async (progressed) => {
            const transitionMask = opts.fields;
            const watch = ctx.clients.status.watchEvents({ filter, fromRevision, transitionMask });
            for await (const batch of watch) {
              progressed();
              for (const t of batch.transitions) {
                if (ctx.json) printJson(transitionMask ? Transition.toJSON(t) : transitionJson(t));
                else process.stdout.write(`${t.taskId}  ${transitionLine(t)}\n`);
              }
              fromRevision = Math.max(fromRevision, batch.revision);
            }
            return undefined;
          });
        },
      ),
    );

  const cancel = new Command('cancel')
    .description(
      'Cancel an unfinished task and the live branches its fan-outs started; a running handler sees its signal aborted.',
    )
    .argument('<task-id>')
    .option('--reason <text>', 'why, for the log', 'cancelled from the CLI')
    .action(
      meshAction(async (ctx, taskId: string, opts: { reason: string }) => {
        const { task } = await ctx.clients.router.cancelTask({ taskId, reason: opts.reason });
        if (ctx.json) return printJson(task ? taskJson(task) : {});
        process.stdout.write(`task ${taskId} is ${task ? stateName(task.state) : 'cancelled'}\n`);
        for (const b of task?.branches ?? []) {
          process.stdout.write(`branch ${b.branchId} is ${stateName(b.state)}\n`);
        }
      }),
    );

  const trace = new Command('trace')
    .description(
      "Draw a task's trace as a waterfall: every span, its process, offset and duration.",
    )
    .argument('<task-id>')
    .addOption(wholeNumberOption('--width <n>', 'bar width', 40, 10, 1000))
    .action(
      meshAction(async (ctx, taskId: string, opts: { width: number }) => {
        const { task } = await ctx.clients.status.getTask({ taskId });
        if (!task?.traceId) throw new Error(`task ${taskId} has no trace id`);
        const spans = await fetchSpans(ctx.config.traces, task.traceId, ctx.config.timeout);
        if (ctx.json) return printJson({ traceId: task.traceId, spans });
        if (spans.length === 0) {
          const endedAgoMs = Date.now() - (task.updatedAt?.getTime() ?? Date.now());
          process.stdout.write(
            isTerminalState(task.state) && endedAgoMs > 60_000
              ? `trace ${task.traceId}: the span receiver holds none of its spans. It keeps recent spans in memory only: they are gone after dsat up restarts, or once newer spans push them out. Set OTEL_EXPORTER_OTLP_ENDPOINT to keep traces in a collector.\n`
              : `trace ${task.traceId}: no spans received yet (spans are exported in batches; try again in a few seconds)\n`,
          );
          return;
        }
        process.stdout.write(renderWaterfall(spans, opts.width) + '\n');
      }),
    );

  return [submit, get, tasks, watch, cancel, trace];
}
