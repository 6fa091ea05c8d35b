import type { Stage } from '../../../gen/dsat/pipeline/v1/pipeline';
import { Decorator, Pipeline } from '../../../gen/dsat/pipeline/v1/pipeline';
import type { DeepPartial } from '../../../gen/dsat/pipeline/v1/pipeline';
import { DsatError } from '../../../services/shared/errors';
import {
  assertValidPipeline,
  validatePipeline,
} from '../../../services/shared/pipeline-validation';

const sec = (seconds: number, nanos = 0) => ({ seconds, nanos });

/** a → b → c, valid; `change` edits it. */
function pipeline(
  change: (p: DeepPartial<Pipeline> & { stages: DeepPartial<Stage>[] }) => void = () => undefined,
) {
  const p = {
    name: 'images',
    stages: [
      { name: 'a', next: ['b'] },
      { name: 'b', next: ['c'], runTimeout: sec(30), heartbeatTimeout: sec(5) },
      { name: 'c' },
    ],
  };
  change(p);
  return Pipeline.fromPartial(p);
}

/** The violations of `p`, as `field: description`. */
function problems(p: Pipeline): string[] {
  return validatePipeline(p).map((v) => `${v.field}: ${v.description}`);
}

/** Exactly one violation, on `field`, whose description contains each of `words`. */
function expectOne(p: Pipeline, field: string, ...words: string[]) {
  const v = validatePipeline(p);
  expect(v.map((x) => x.field)).toEqual([field]);
  for (const w of words) expect(v[0]?.description).toContain(w);
}

describe('pipeline validation', () => {
  it('accepts a valid pipeline, fan-out and a join included', () => {
    expect(problems(pipeline())).toEqual([]);
    expect(
      problems(
        pipeline((p) => {
          p.stages = [
            { name: 'split', next: ['left', 'right'] },
            { name: 'left', next: ['join'] },
            { name: 'right', next: ['join'] },
            { name: 'join', decorators: [Decorator.DECORATOR_ASYNC], asyncTimeout: sec(60) },
          ];
        }),
      ),
    ).toEqual([]);
  });

  it('requires a pipeline name', () => {
    expectOne(
      pipeline((p) => (p.name = '')),
      'pipeline.name',
      'required',
    );
  });

  it('refuses upper case or other characters in the pipeline name', () => {
    expectOne(
      pipeline((p) => (p.name = 'Images!')),
      'pipeline.name',
      '"Images!"',
      'lower case',
    );
  });

  it('refuses a pipeline name longer than 63 characters', () => {
    expectOne(
      pipeline((p) => (p.name = 'x'.repeat(64))),
      'pipeline.name',
      '63',
    );
  });

  it('refuses a pipeline without stages', () => {
    expectOne(
      pipeline((p) => (p.stages = [])),
      'pipeline.stages',
      'at least one stage',
    );
  });

  it('refuses a bad stage name, naming the stage index', () => {
    expectOne(
      pipeline((p) => {
        p.stages[2]!.name = 'C D';
        p.stages[1]!.next = ['C D'];
      }),
      'pipeline.stages[2].name',
      '"C D"',
    );
  });

  it('refuses a duplicate stage', () => {
    expectOne(
      pipeline((p) => p.stages.push({ name: 'b' })),
      'pipeline.stages[3].name',
      'stage "b" is declared twice',
      'stages[1]',
    );
  });

  it('refuses an unknown next stage, naming the edge and the stage', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.next = ['zz'])),
      'pipeline.stages[2].next[0]',
      'stage "c"',
      'unknown next stage "zz"',
    );
  });

  it('refuses the same next stage twice', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.next = ['b', 'b'])),
      'pipeline.stages[0].next[1]',
      'twice',
    );
  });

  it('refuses more next stages than a fan-out may start branches for', () => {
    const many = Array.from({ length: 66 }, (_, i) => `s${i}`);
    expectOne(
      pipeline((p) => {
        p.stages[0]!.next = ['b', ...many];
        p.stages.push(...many.map((name) => ({ name })));
      }),
      'pipeline.stages[0].next',
      '67 next stages; at most 65',
    );
  });

  it('refuses an unknown entry_stage', () => {
    expectOne(
      pipeline((p) => (p.entryStage = 'nope')),
      'pipeline.entry_stage',
      '"nope"',
    );
  });

  it('refuses a cycle, naming the edge that closes it and the cycle', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.next = ['a'])),
      'pipeline.stages[2].next[0]',
      'stage "c" → "a" closes a cycle: a → b → c → a',
    );
  });

  it('refuses a stage that names itself as next (a cycle of one)', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.next = ['c'])),
      'pipeline.stages[2].next[0]',
      'c → c',
    );
  });

  it('refuses an unreachable stage', () => {
    expectOne(
      pipeline((p) => p.stages.push({ name: 'orphan' })),
      'pipeline.stages[3]',
      '"orphan" cannot be reached from the entry stage "a"',
    );
  });

  it('measures reachability from entry_stage when it is set', () => {
    expectOne(
      pipeline((p) => (p.entryStage = 'b')),
      'pipeline.stages[0]',
      '"a" cannot be reached',
      '"b"',
    );
  });

  it('refuses a negative duration', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.queueTimeout = sec(-5))),
      'pipeline.stages[0].queue_timeout',
      'stage "a"',
      'negative',
    );
  });

  it('refuses a malformed duration (nanos out of range, or signs that differ)', () => {
    expectOne(
      pipeline((p) => (p.stages[1]!.runTimeout = sec(30, 2_000_000_000))),
      'pipeline.stages[1].run_timeout',
      'not a valid duration',
    );
    expectOne(
      pipeline((p) => (p.stages[2]!.queueTimeout = sec(1, -5))),
      'pipeline.stages[2].queue_timeout',
      'sign',
    );
  });

  it('refuses a duration below 1 ms and one longer than a year', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.runTimeout = sec(0, 999))),
      'pipeline.stages[2].run_timeout',
      '1ms',
    );
    expectOne(
      pipeline((p) => (p.stages[2]!.queueTimeout = sec(400 * 86_400))),
      'pipeline.stages[2].queue_timeout',
      '365d',
    );
  });

  it('refuses a heartbeat_timeout not shorter than run_timeout', () => {
    expectOne(
      pipeline((p) => (p.stages[1]!.heartbeatTimeout = sec(30))),
      'pipeline.stages[1].heartbeat_timeout',
      'stage "b"',
      'heartbeat_timeout 30s must be shorter than run_timeout 30s',
    );
  });

  it('refuses an async_timeout on a stage that is not ASYNC', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.asyncTimeout = sec(10))),
      'pipeline.stages[2].async_timeout',
      'ASYNC',
    );
  });

  it('refuses worker timeouts on a PUBLISH stage, which runs no worker', () => {
    expectOne(
      pipeline((p) => {
        p.stages[2]!.decorators = [Decorator.DECORATOR_PUBLISH];
        p.stages[2]!.runTimeout = sec(3);
      }),
      'pipeline.stages[2].run_timeout',
      'PUBLISH',
    );
  });

  it('refuses PUBLISH and ASYNC together', () => {
    expectOne(
      pipeline(
        (p) => (p.stages[2]!.decorators = [Decorator.DECORATOR_PUBLISH, Decorator.DECORATOR_ASYNC]),
      ),
      'pipeline.stages[2].decorators',
      'stage "c"',
      'PUBLISH and ASYNC cannot be combined',
    );
  });

  it('refuses an unknown or repeated decorator', () => {
    expectOne(
      pipeline((p) => (p.stages[2]!.decorators = [Decorator.DECORATOR_UNSPECIFIED])),
      'pipeline.stages[2].decorators[0]',
      'not a decorator',
    );
    expectOne(
      pipeline(
        (p) => (p.stages[2]!.decorators = [Decorator.DECORATOR_ASYNC, Decorator.DECORATOR_ASYNC]),
      ),
      'pipeline.stages[2].decorators[1]',
      'twice',
    );
  });

  it('refuses max_attempts above 100', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.maxAttempts = 101)),
      'pipeline.stages[0].max_attempts',
      '1 to 100',
      '101',
    );
  });

  it('refuses max_hops above 1000', () => {
    expectOne(
      pipeline((p) => (p.maxHops = 5_000)),
      'pipeline.max_hops',
      '1 to 1000',
    );
  });

  it('refuses max_hops below the longest path, which could never finish', () => {
    expectOne(
      pipeline((p) => (p.maxHops = 2)),
      'pipeline.max_hops',
      '3 stages of the longest path',
    );
    const long = pipeline((p) => {
      p.stages = Array.from({ length: 51 }, (_, i) => ({
        name: `s${i}`,
        next: i < 50 ? [`s${i + 1}`] : [],
      }));
    });
    expectOne(long, 'pipeline.max_hops', 'the default 50');
  });

  it('refuses a backoff whose max is shorter than its initial', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { initial: sec(10), max: sec(5) })),
      'pipeline.stages[0].backoff.max',
      'backoff.max 5s is shorter than backoff.initial 10s',
    );
  });

  it('refuses a negative backoff duration', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { initial: sec(-1) })),
      'pipeline.stages[0].backoff.initial',
      'negative',
    );
  });

  it('refuses a backoff multiplier below 1 or above 100', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { multiplier: 0.5 })),
      'pipeline.stages[0].backoff.multiplier',
      '0.5',
    );
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { multiplier: 1_000 })),
      'pipeline.stages[0].backoff.multiplier',
      '1000',
    );
  });

  it('refuses a jitter outside 0..1', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { jitter: 1.5 })),
      'pipeline.stages[0].backoff.jitter',
      '1.5',
    );
    expectOne(
      pipeline((p) => (p.stages[0]!.backoff = { jitter: NaN })),
      'pipeline.stages[0].backoff.jitter',
      'NaN',
    );
  });

  it('refuses empty or repeated non_retryable_errors', () => {
    expectOne(
      pipeline((p) => (p.stages[0]!.nonRetryableErrors = [''])),
      'pipeline.stages[0].non_retryable_errors[0]',
      'empty',
    );
    expectOne(
      pipeline((p) => (p.stages[0]!.nonRetryableErrors = ['BAD_INPUT', 'BAD_INPUT'])),
      'pipeline.stages[0].non_retryable_errors[1]',
      'twice',
    );
  });

  it('refuses an over-long description', () => {
    expectOne(
      pipeline((p) => (p.description = 'x'.repeat(1_025))),
      'pipeline.description',
      '1024',
    );
  });

  it('lists every problem at once in one INVALID_ARGUMENT, each with its field', () => {
    const bad = pipeline((p) => {
      p.name = 'Bad';
      p.stages[0]!.next = ['b', 'nowhere'];
      p.stages[1]!.heartbeatTimeout = sec(60);
      p.stages[2]!.decorators = [Decorator.DECORATOR_PUBLISH, Decorator.DECORATOR_ASYNC];
    });
    let error: unknown;
    try {
      assertValidPipeline(bad);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(DsatError);
    const e = error as DsatError;
    expect(e.kind).toBe('INVALID_ARGUMENT');
    expect(e.reason).toBe('INVALID_PIPELINE');
    expect(e.violations.map((v) => v.field)).toEqual([
      'pipeline.name',
      'pipeline.stages[0].next[1]',
      'pipeline.stages[1].heartbeat_timeout',
      'pipeline.stages[2].decorators',
    ]);
    expect(e.message).toContain('4 problems');
    expect(e.message).toContain(
      'pipeline.stages[0].next[1]: stage "a" names unknown next stage "nowhere"',
    );
  });
});
