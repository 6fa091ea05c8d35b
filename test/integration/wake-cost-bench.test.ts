import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from '@jest/globals';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

describe('bench/wake-cost.ts', () => {
  it('echoes every message through a child process and prints the CPU each side spent per message', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'bench/wake-cost.ts', '--rates', '100', '--seconds', '1'],
      { cwd: root, timeout: 60_000 },
    );
    const result = JSON.parse(stdout.trim()) as Record<string, number | string>;
    expect(result).toMatchObject({ type: 'wake_cost', spinners: 0, rate: 100 });
    expect(result.sent).toBeGreaterThanOrEqual(90);
    expect(result.received).toBe(result.sent);
    expect(result.sender_us_per_message).toBeGreaterThan(0);
    expect(result.echo_us_per_message).toBeGreaterThanOrEqual(0);
  }, 60_000);
});
