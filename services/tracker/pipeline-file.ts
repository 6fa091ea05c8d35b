import fs from 'node:fs';
import { parseDocument } from 'yaml';
import type { Backoff, Stage } from '../../gen/dsat/pipeline/v1/pipeline';
import { Decorator, Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type { Duration } from '../../gen/google/protobuf/duration';
import type { FieldViolation } from '../shared/errors';
import { DsatError } from '../shared/errors';
import { protoFieldName } from '../shared/field-names';
import { msDuration } from '../shared/proto-duration';

/**
 * Pipeline files, YAML or JSON (JSON is YAML), as `dsat pipelines apply FILE` reads them:
 *
 * ```yaml
 * name: images
 * description: fetch, resize, publish
 * entry_stage: fetch            # default: the first stage
 * max_hops: 20                  # default 50
 * stages:
 *   - name: fetch
 *     next: [resize]            # or one name; several fan out
 *     queue_timeout: 30s        # durations: 500ms, 30s, 1.5m, 1h30m, 7d; 0 = no limit
 *     run_timeout: 2m
 *     heartbeat_timeout: 10s
 *     max_attempts: 5
 *     backoff: { initial: 1s, max: 1m, multiplier: 2, jitter: 0.2 }
 *     non_retryable_errors: [BAD_INPUT]
 *     concurrency: 4            # most attempts running at once (per router serving the stage)
 *   - name: resize
 *     decorators: [ASYNC]       # PUBLISH or ASYNC
 *     async_timeout: 1h
 * ```
 *
 * Keys are snake_case or the proto JSON camelCase. Every problem is reported at once, each naming
 * its field and stage (`stages[1].run_timeout: stage "resize": ...`). This checks the file's shape
 * and types; the pipeline's rules (cycles, unknown stages, ranges) are `validatePipeline`'s.
 */

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30s`, `1.5m`, `1h30m`, `250ms`, `0`; a leading `-` gives a negative duration (refused later). */
export function parseDurationText(text: string): number | undefined {
  const raw = text.trim();
  if (raw === '0') return 0;
  const negative = raw.startsWith('-');
  const body = negative ? raw.slice(1) : raw;
  if (body === '') return undefined;
  DURATION_PART.lastIndex = 0;
  let ms = 0;
  let at = 0;
  while (at < body.length) {
    DURATION_PART.lastIndex = at;
    const m = DURATION_PART.exec(body);
    if (m === null) return undefined;
    ms += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    at = DURATION_PART.lastIndex;
  }
  return negative ? -ms : ms;
}

type Raw = Record<string, unknown>;

const PIPELINE_KEYS = ['name', 'description', 'entry_stage', 'max_hops', 'stages'] as const;
const STAGE_KEYS = [
  'name',
  'next',
  'queue_timeout',
  'run_timeout',
  'heartbeat_timeout',
  'async_timeout',
  'max_attempts',
  'backoff',
  'non_retryable_errors',
  'concurrency',
  'decorators',
] as const;
const BACKOFF_KEYS = ['initial', 'max', 'multiplier', 'jitter'] as const;

class Reader {
  readonly violations: FieldViolation[] = [];

  problem(field: string, description: string): void {
    this.violations.push({ field, description });
  }

  /** The object's keys in snake_case; unknown keys are reported. */
  object(
    value: unknown,
    field: string,
    known: readonly string[],
    context: string,
  ): Raw | undefined {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.problem(field || '(file)', `${context}must be a mapping of keys to values`);
      return undefined;
    }
    const out: Raw = {};
    for (const [k, v] of Object.entries(value as Raw)) {
      const key = protoFieldName(k);
      if (!known.includes(key)) {
        this.problem(
          field ? `${field}.${k}` : k,
          `${context}unknown key ${JSON.stringify(k)} (known: ${known.join(', ')})`,
        );
        continue;
      }
      out[key] = v;
    }
    return out;
  }

  string(v: unknown, field: string, context: string): string {
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return String(v);
    this.problem(field, `${context}must be text`);
    return '';
  }

  strings(v: unknown, field: string, context: string): string[] {
    if (v === undefined || v === null) return [];
    if (typeof v === 'string') return [v];
    if (!Array.isArray(v)) {
      this.problem(field, `${context}must be a name or a list of names`);
      return [];
    }
    return v.map((x, i) => this.string(x, `${field}[${i}]`, context));
  }

  count(v: unknown, field: string, context: string): number {
    if (v === undefined || v === null) return 0;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return v;
    this.problem(field, `${context}must be a whole number from 0 (got ${JSON.stringify(v)})`);
    return 0;
  }

  number(v: unknown, field: string, context: string): number {
    if (v === undefined || v === null) return 0;
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    this.problem(field, `${context}must be a number (got ${JSON.stringify(v)})`);
    return 0;
  }

  duration(v: unknown, field: string, context: string): Duration | undefined {
    if (v === undefined || v === null) return undefined;
    const ms = typeof v === 'string' ? parseDurationText(v) : v === 0 ? 0 : undefined;
    if (ms === undefined) {
      this.problem(
        field,
        `${context}${JSON.stringify(v)} is not a duration (e.g. 500ms, 30s, 1.5m, 1h30m, 7d; 0 for no limit)`,
      );
      return undefined;
    }
    return ms === 0 ? undefined : msDuration(ms);
  }

  decorators(v: unknown, field: string, context: string): Decorator[] {
    return this.strings(v, field, context).map((name, i) => {
      const upper = name
        .trim()
        .toUpperCase()
        .replace(/^DECORATOR_/, '');
      if (upper === 'PUBLISH') return Decorator.DECORATOR_PUBLISH;
      if (upper === 'ASYNC') return Decorator.DECORATOR_ASYNC;
      this.problem(
        `${field}[${i}]`,
        `${context}${JSON.stringify(name)} is not a decorator (PUBLISH or ASYNC)`,
      );
      return Decorator.DECORATOR_UNSPECIFIED;
    });
  }
}

function readBackoff(r: Reader, v: unknown, field: string, context: string): Backoff | undefined {
  if (v === undefined || v === null) return undefined;
  const raw = r.object(v, field, BACKOFF_KEYS, context);
  if (raw === undefined) return undefined;
  return {
    initial: r.duration(raw.initial, `${field}.initial`, context),
    max: r.duration(raw.max, `${field}.max`, context),
    multiplier: r.number(raw.multiplier, `${field}.multiplier`, context),
    jitter: r.number(raw.jitter, `${field}.jitter`, context),
  };
}

function readStage(r: Reader, v: unknown, field: string): Stage {
  const name = typeof (v as Raw | null)?.name === 'string' ? ((v as Raw).name as string) : '';
  const context = name === '' ? '' : `stage ${JSON.stringify(name)}: `;
  const raw = r.object(v, field, STAGE_KEYS, context) ?? {};
  return {
    name: r.string(raw.name, `${field}.name`, context),
    next: r.strings(raw.next, `${field}.next`, context),
    queueTimeout: r.duration(raw.queue_timeout, `${field}.queue_timeout`, context),
    runTimeout: r.duration(raw.run_timeout, `${field}.run_timeout`, context),
    heartbeatTimeout: r.duration(raw.heartbeat_timeout, `${field}.heartbeat_timeout`, context),
    asyncTimeout: r.duration(raw.async_timeout, `${field}.async_timeout`, context),
    maxAttempts: r.count(raw.max_attempts, `${field}.max_attempts`, context),
    backoff: readBackoff(r, raw.backoff, `${field}.backoff`, context),
    nonRetryableErrors: r.strings(
      raw.non_retryable_errors,
      `${field}.non_retryable_errors`,
      context,
    ),
    concurrency: r.count(raw.concurrency, `${field}.concurrency`, context),
    decorators: r.decorators(raw.decorators, `${field}.decorators`, context),
  };
}

function fileError(source: string, violations: FieldViolation[]): DsatError {
  const lines = violations.map((v) => `${v.field}: ${v.description}`);
  return new DsatError(
    'INVALID_ARGUMENT',
    'INVALID_PIPELINE_FILE',
    `${source}: ${lines.length === 1 ? lines[0] : `${lines.length} problems:\n  ${lines.join('\n  ')}`}`,
    { violations, metadata: { file: source } },
  );
}

/** Reads a pipeline from YAML or JSON text; throws INVALID_ARGUMENT naming every bad field. */
export function parsePipelineText(text: string, source = 'pipeline'): Pipeline {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw fileError(
      source,
      doc.errors.map((e) => ({
        field: e.linePos ? `line ${e.linePos[0].line}` : '(file)',
        // The first line says what and where; the excerpt under it does not fit one line.
        description: (e.message.split('\n')[0] ?? e.message).replace(/:$/, ''),
      })),
    );
  }
  const r = new Reader();
  const raw = r.object(doc.toJS() as unknown, '', PIPELINE_KEYS, '') ?? {};
  const stagesRaw = raw.stages;
  let stages: Stage[] = [];
  if (Array.isArray(stagesRaw)) {
    stages = stagesRaw.map((s, i) => readStage(r, s, `stages[${i}]`));
  } else if (stagesRaw !== undefined && stagesRaw !== null) {
    r.problem('stages', 'must be a list of stages');
  }
  const pipeline = Pipeline.fromPartial({
    name: r.string(raw.name, 'name', ''),
    description: r.string(raw.description, 'description', ''),
    entryStage: r.string(raw.entry_stage, 'entry_stage', ''),
    maxHops: r.count(raw.max_hops, 'max_hops', ''),
    stages,
  });
  if (r.violations.length > 0) throw fileError(source, r.violations);
  return pipeline;
}

/** Reads a pipeline file (YAML or JSON); the CLI's `dsat pipelines apply FILE`. */
export function readPipelineFile(file: string): Pipeline {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new DsatError(
      'INVALID_ARGUMENT',
      'PIPELINE_FILE_UNREADABLE',
      `${file}: ${(err as Error).message}`,
      {
        cause: err,
        metadata: { file },
      },
    );
  }
  if (file.endsWith('.json')) checkStrictJson(text, file);
  return parsePipelineText(text, file);
}

/**
 * A `.json` file must be JSON: YAML would take a trailing comma or a comment, and the file would
 * then break any other JSON tool that reads it.
 */
function checkStrictJson(text: string, file: string): void {
  try {
    JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    const at = /position (\d+)/.exec(message);
    const before = at ? text.slice(0, Number(at[1])) : undefined;
    const where = before
      ? `line ${before.split('\n').length}, column ${before.length - before.lastIndexOf('\n')}`
      : '(file)';
    throw fileError(file, [
      {
        field: where,
        description: `not valid JSON: ${message.replace(/ in JSON at position \d+.*$/, '')}`,
      },
    ]);
  }
}
