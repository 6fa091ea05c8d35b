import fs from 'node:fs';
import path from 'node:path';
import { Decorator } from '../../../gen/dsat/pipeline/v1/pipeline';
import { DsatError } from '../../../services/shared/errors';
import {
  parseDurationText,
  parsePipelineText,
  readPipelineFile,
} from '../../../services/tracker/pipeline-file';
import { validatePipeline } from '../../../services/shared/pipeline-validation';
import { tempDir } from '../../helpers/temp-dir';

const YAML = `
name: images
description: fetch, resize, publish
entry_stage: fetch
max_hops: 20
stages:
  - name: fetch
    next: resize
    queue_timeout: 30s
    run_timeout: 2m
    heartbeat_timeout: 10s
    max_attempts: 5
    backoff: { initial: 500ms, max: 1m, multiplier: 3, jitter: 0.1 }
    non_retryable_errors: [BAD_INPUT]
    concurrency: 4
  - name: resize
    next: [announce]
    decorators: [async]
    async_timeout: 1h30m
  - name: announce
    decorators: [DECORATOR_PUBLISH]
`;

function failure(fn: () => unknown): DsatError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DsatError) return err;
    throw err;
  }
  throw new Error('expected a DsatError');
}

describe('pipeline files', () => {
  it('reads durations with units', () => {
    expect(parseDurationText('30s')).toBe(30_000);
    expect(parseDurationText('1.5m')).toBe(90_000);
    expect(parseDurationText('1h30m')).toBe(5_400_000);
    expect(parseDurationText('250ms')).toBe(250);
    expect(parseDurationText('7d')).toBe(604_800_000);
    expect(parseDurationText('0')).toBe(0);
    expect(parseDurationText('-5s')).toBe(-5_000);
    expect(parseDurationText('30')).toBeUndefined();
    expect(parseDurationText('30 sec')).toBeUndefined();
    expect(parseDurationText('')).toBeUndefined();
  });

  it('reads a YAML pipeline into the proto, valid as written', () => {
    const p = parsePipelineText(YAML);
    expect(validatePipeline(p)).toEqual([]);
    expect(p).toMatchObject({ name: 'images', entryStage: 'fetch', maxHops: 20, version: 0 });
    expect(p.stages[0]).toMatchObject({
      name: 'fetch',
      next: ['resize'],
      queueTimeout: { seconds: 30, nanos: 0 },
      runTimeout: { seconds: 120, nanos: 0 },
      heartbeatTimeout: { seconds: 10, nanos: 0 },
      maxAttempts: 5,
      backoff: {
        initial: { seconds: 0, nanos: 500_000_000 },
        max: { seconds: 60, nanos: 0 },
        multiplier: 3,
        jitter: 0.1,
      },
      nonRetryableErrors: ['BAD_INPUT'],
      concurrency: 4,
    });
    expect(p.stages[1]).toMatchObject({
      decorators: [Decorator.DECORATOR_ASYNC],
      asyncTimeout: { seconds: 5_400, nanos: 0 },
    });
    expect(p.stages[2]?.decorators).toEqual([Decorator.DECORATOR_PUBLISH]);
  });

  it('reads the same pipeline as proto JSON with camelCase keys', () => {
    const json = JSON.stringify({
      name: 'images',
      entryStage: 'fetch',
      stages: [
        { name: 'fetch', next: ['done'], runTimeout: '2m', maxAttempts: 2 },
        { name: 'done' },
      ],
    });
    const p = parsePipelineText(json, 'p.json');
    expect(p.entryStage).toBe('fetch');
    expect(p.stages[0]).toMatchObject({ runTimeout: { seconds: 120, nanos: 0 }, maxAttempts: 2 });
  });

  it('names the stage and the field of every bad value, all at once', () => {
    const e = failure(() =>
      parsePipelineText(
        `
name: images
stages:
  - name: fetch
    run_timeout: 30 sec
    max_attempts: -1
  - name: resize
    decorators: [LATER]
    backoff: { initial: soon, jitter: high }
    colour: blue
`,
        'images.yaml',
      ),
    );
    expect(e.kind).toBe('INVALID_ARGUMENT');
    expect(e.violations.map((v) => v.field)).toEqual([
      'stages[0].run_timeout',
      'stages[0].max_attempts',
      'stages[1].colour',
      'stages[1].backoff.initial',
      'stages[1].backoff.jitter',
      'stages[1].decorators[0]',
    ]);
    expect(e.message).toContain('images.yaml: 6 problems');
    expect(e.message).toContain('stages[0].run_timeout: stage "fetch": "30 sec" is not a duration');
    expect(e.message).toContain('stages[1].colour: stage "resize": unknown key "colour"');
    expect(e.message).toContain(
      'stages[1].decorators[0]: stage "resize": "LATER" is not a decorator',
    );
  });

  it('refuses a bare number as a duration (seconds or milliseconds?)', () => {
    const e = failure(() => parsePipelineText('name: p\nstages: [{name: s, run_timeout: 30}]'));
    expect(e.violations[0]?.field).toBe('stages[0].run_timeout');
  });

  it('reports a YAML syntax error with its line', () => {
    const e = failure(() => parsePipelineText('name: p\nstages: [\n  {name: s\n', 'broken.yaml'));
    expect(e.message).toMatch(/^broken\.yaml: /);
    expect(e.violations[0]?.field).toMatch(/^line \d+$/);
  });

  it('refuses unknown top-level keys and a file that is not a mapping', () => {
    expect(failure(() => parsePipelineText('name: p\nstage: []')).violations[0]?.field).toBe(
      'stage',
    );
    expect(failure(() => parsePipelineText('- a\n- b')).message).toContain('mapping');
  });

  it('reads a file from disk, naming it in errors', () => {
    const dir = tempDir();
    try {
      const file = path.join(dir.path, 'images.yaml');
      fs.writeFileSync(file, YAML);
      expect(readPipelineFile(file).stages).toHaveLength(3);
      expect(
        failure(() => readPipelineFile(path.join(dir.path, 'missing.yaml'))).message,
      ).toContain('missing.yaml');
      // YAML takes a trailing comma; a .json file must be JSON all the same.
      const json = path.join(dir.path, 'mine.json');
      fs.writeFileSync(json, '{"name":"mine","stages":[{"name":"a","next":[]},]}');
      expect(failure(() => readPipelineFile(json)).message).toMatch(/mine\.json.*not valid JSON/);
      fs.writeFileSync(json, '{"name":"mine","stages":[{"name":"a","next":[]}]}');
      expect(readPipelineFile(json).stages.map((st) => st.name)).toEqual(['a']);
    } finally {
      dir.cleanup();
    }
  });
});
