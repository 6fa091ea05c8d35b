import crypto from 'node:crypto';

/**
 * The pipeline3 workload, the same as the peers' benchmark (../shared/peers-bench/lib/common.js):
 * a 256-byte JSON task {id, seq, body}; stage 1 parses it and adds a field, stage 2 adds the sha256
 * of the body, stage 3 upper-cases the body.
 */
export const PAYLOAD_BYTES = 256;
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';

export interface BenchTask {
  readonly id: string;
  readonly seq: number;
  readonly json: string;
  readonly body: string;
}

export interface StageDoc {
  id: string;
  seq: number;
  body: string;
  stage1At?: number;
  sha256?: string;
}

function randomBody(len: number): string {
  const bytes = crypto.randomBytes(len);
  let s = '';
  for (let i = 0; i < len; i++) s += ALNUM[bytes[i]! % ALNUM.length];
  return s;
}

export function makeTasks(n: number, prefix: string): BenchTask[] {
  const tasks: BenchTask[] = new Array(n);
  for (let seq = 0; seq < n; seq++) {
    const id = `${prefix}-${seq.toString().padStart(6, '0')}`;
    const skeleton = JSON.stringify({ id, seq, body: '' });
    const body = randomBody(PAYLOAD_BYTES - Buffer.byteLength(skeleton));
    tasks[seq] = { id, seq, json: JSON.stringify({ id, seq, body }), body };
  }
  return tasks;
}

export function stage1(jsonText: string): StageDoc {
  const o = JSON.parse(jsonText) as StageDoc;
  o.stage1At = Date.now();
  return o;
}

export function stage2(o: StageDoc): StageDoc {
  o.sha256 = crypto.createHash('sha256').update(o.body).digest('hex');
  return o;
}

export function stage3(o: StageDoc): StageDoc {
  o.body = o.body.toUpperCase();
  return o;
}

/** True when a final result is what the three stages make of the task. */
export function isCorrectResult(task: BenchTask, r: StageDoc): boolean {
  return (
    r.seq === task.seq &&
    typeof r.stage1At === 'number' &&
    r.sha256 === crypto.createHash('sha256').update(task.body).digest('hex') &&
    r.body === task.body.toUpperCase()
  );
}
