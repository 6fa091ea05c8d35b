import Table from 'cli-table3';
import { ClientError, Status } from 'nice-grpc-common';
import { ErrorInfo, RichClientError } from 'nice-grpc-error-details';
import type { Pipeline } from '../gen/dsat/pipeline/v1/pipeline';
import type { Task, Transition } from '../gen/dsat/task/v1/task';
import type { Payload } from '../gen/dsat/task/v1/task';
import { TaskState } from '../gen/dsat/task/v1/task';

/**
 * Exits once stdout and stderr have handed everything to the OS: `process.exit` alone drops what a
 * full pipe has not taken yet (a `--json` listing piped into jq would end at 64 KiB).
 */
export async function exitWhenFlushed(code?: number): Promise<never> {
  await Promise.all(
    [process.stdout, process.stderr].map(
      (stream) => new Promise<void>((resolve) => stream.write('', () => resolve())),
    ),
  );
  // process.exit(undefined) exits 0 whatever process.exitCode says: call it without an argument.
  return code === undefined ? process.exit() : process.exit(code);
}

/** Human output by default; `--json` prints one JSON document (or line per event) for scripts. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, jsonReplacer) + '\n');
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  return value;
}

/** Rows under a header; `empty`, when given, says so in words instead of an empty frame. */
export function table(head: string[], rows: (string | number)[][], empty?: string): string {
  if (rows.length === 0 && empty !== undefined) return empty;
  const t = new Table({ head, style: { head: [], border: [] } });
  for (const r of rows) t.push(r.map(String));
  return t.toString();
}

/**
 * A pipeline's stages as a path from its entry: `parse → hash → upper`, a fan-out or a choice in
 * braces, `parse → {hash, upper}`; a stage reached a second time is named without its path again.
 */
export function stageGraph(p: Pick<Pipeline, 'stages' | 'entryStage'>): string {
  const byName = new Map(p.stages.map((s) => [s.name, s]));
  const seen = new Set<string>();
  const path = (name: string): string => {
    const stage = byName.get(name);
    if (stage === undefined || seen.has(name)) return name;
    seen.add(name);
    if (stage.next.length === 0) return name;
    if (stage.next.length === 1) return `${name} → ${path(stage.next[0]!)}`;
    return `${name} → {${stage.next.map(path).join(', ')}}`;
  };
  const entry = p.entryStage || p.stages[0]?.name;
  const drawn = entry === undefined ? [] : [path(entry)];
  for (const s of p.stages) if (!seen.has(s.name)) drawn.push(path(s.name));
  return drawn.join('; ');
}

export function stateName(state: TaskState): string {
  return TaskState[state]?.replace(/^TASK_STATE_/, '') ?? String(state);
}

/** A payload as text when its content type is textual, else its size. */
export function showPayload(p: Payload | undefined): string {
  if (!p || p.data.length === 0) return '';
  const textual = /json|text|xml|yaml/.test(p.contentType) || p.contentType === '';
  return textual
    ? Buffer.from(p.data).toString('utf8')
    : `<${p.data.length} bytes ${p.contentType}>`;
}

export function taskJson(t: Task) {
  return {
    taskId: t.taskId,
    pipeline: t.pipeline,
    pipelineVersion: t.pipelineVersion,
    stage: t.stage,
    state: stateName(t.state),
    attempt: t.attempt,
    seq: t.seq,
    revision: t.revision,
    traceId: t.traceId,
    input: payloadJson(t.input),
    output: payloadJson(t.output),
    lastError: t.lastError,
    createdAt: t.createdAt?.toISOString(),
    updatedAt: t.updatedAt?.toISOString(),
    workerId: t.workerId,
    hops: t.hops,
    progress: t.progress,
    parentTaskId: t.parentTaskId || undefined,
    branches: t.branches.length
      ? t.branches.map((b) => ({
          taskId: b.branchId,
          stage: b.stage,
          state: stateName(b.state),
          attempt: b.attempt,
        }))
      : undefined,
  };
}

function payloadJson(p: Payload | undefined) {
  if (!p) return undefined;
  const textual = /json|text/.test(p.contentType);
  return textual
    ? { contentType: p.contentType, text: Buffer.from(p.data).toString('utf8') }
    : { contentType: p.contentType, base64: Buffer.from(p.data).toString('base64') };
}

export function transitionJson(t: Transition) {
  return {
    revision: t.revision,
    taskId: t.taskId,
    seq: t.seq,
    from: stateName(t.fromState),
    to: stateName(t.toState),
    stage: t.stage,
    attempt: t.attempt,
    workerId: t.workerId,
    reason: t.reason,
    at: t.at?.toISOString(),
    error: t.error,
  };
}

export function transitionLine(t: Transition): string {
  const at = t.at ? t.at.toISOString().slice(11, 23) : '';
  const err = t.error?.message ? `  error: ${t.error.code} ${t.error.message}` : '';
  return `${at}  ${stateName(t.toState).padEnd(13)} ${t.stage.padEnd(12)} attempt ${t.attempt}  ${t.reason}${t.workerId ? `  worker ${t.workerId}` : ''}${err}`;
}

/** One clear line for a failed call: status, message, and the field when the server named one. */
export function describeError(err: unknown): string {
  if (err instanceof ClientError) {
    const info =
      err instanceof RichClientError
        ? (err.extra.find((d) => d.$type === ErrorInfo.$type) as ErrorInfo | undefined)
        : undefined;
    const where = err.code === Status.UNAVAILABLE ? ` (is the mesh running? ${err.path})` : '';
    const reason = info?.reason ? ` [${info.reason}]` : '';
    return `${Status[err.code]}: ${err.details}${reason}${where}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** A one-line progress bar, e.g. `[########------------]  8,000/20,000`. */
export function progressBar(done: number, total: number, width = 24): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const filled = Math.round(f * width);
  const n = (x: number) => x.toLocaleString('en-US');
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${n(done).padStart(n(total).length)}/${n(total)}`;
}
