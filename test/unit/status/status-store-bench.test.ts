import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from '@jest/globals';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../../..');

describe('bench/status-store-raw.ts', () => {
  it('runs a tiny workload and prints its figures as JSON', async () => {
    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        'bench/status-store-raw.ts',
        '--tasks',
        '60',
        '--inflight',
        '7',
        '--mode',
        'stage',
      ],
      { cwd: root, timeout: 60_000 },
    );
    const result = JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, number>;
    expect(result).toMatchObject({ tasks: 60, transitions_per_task: 11 });
    for (const key of [
      'transitions_per_s',
      'puts_per_task',
      'transitions_per_put',
      'peak_rss_mb',
    ]) {
      expect(result[key]).toBeGreaterThan(0);
    }
  }, 60_000);
});
