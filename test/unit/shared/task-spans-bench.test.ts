import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from '@jest/globals';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../../..');

describe('bench/task-spans.ts', () => {
  it('times both ways of making task spans on a tiny workload and prints JSON', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'bench/task-spans.ts', '--spans', '300', '--rounds', '2'],
      { cwd: root, timeout: 60_000 },
    );
    const result = JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, number>;
    expect(result).toMatchObject({ spans_per_round: 300, rounds: 2 });
    expect(result.sdk_tracer_cpu_us_per_span).toBeGreaterThan(0);
    expect(result.recorder_cpu_us_per_span).toBeGreaterThan(0);
    // Every span reached a request: a task span of this shape encodes to several hundred bytes.
    expect(result.request_bytes_per_span).toBeGreaterThan(300);
  }, 60_000);
});
