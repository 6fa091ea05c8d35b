import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { endedEarly } from '../../../bench/pipeline3/orchestrator';
import type { Proc } from '../../../bench/pipeline3/orchestrator';

/** A real child process running `code`, ended or not as the test needs. */
function child(code: string): ChildProcess {
  return spawn(process.execPath, ['-e', code], { stdio: 'ignore' });
}

describe('why a benchmark run ended early', () => {
  const live: ChildProcess[] = [];
  afterAll(() => live.forEach((c) => c.kill('SIGKILL')));

  it('names each service that exited, by code or signal, and says nothing of a complete run', async () => {
    const crashed = child('process.exit(3)');
    const killed = child('setInterval(() => {}, 1000)');
    const running = child('setInterval(() => {}, 1000)');
    const client = child('process.exit(1)');
    live.push(running);
    killed.kill('SIGKILL');
    await Promise.all([once(crashed, 'exit'), once(killed, 'exit'), once(client, 'exit')]);
    const procs: Proc[] = [
      { name: 'status', role: 'server', child: crashed },
      { name: 'stage2', role: 'stage', child: killed },
      { name: 'router', role: 'server', child: running },
      { name: 'client', role: 'client', child: client },
    ];
    expect(endedEarly(procs, { how: 'stalled', warmup: { how: 'complete' } })).toBe(
      'the run stalled (status exited (code 3), stage2 exited (SIGKILL))',
    );
    expect(endedEarly(procs, { how: 'complete', warmup: { how: 'deadline' } })).toBe(
      'the run ran past its deadline (status exited (code 3), stage2 exited (SIGKILL))',
    );
    expect(endedEarly(procs.slice(2), { how: 'stalled' })).toBe(
      'the run stalled (no service exited)',
    );
    expect(endedEarly(procs, { how: 'complete', warmup: { how: 'complete' } })).toBeUndefined();
  });
});
