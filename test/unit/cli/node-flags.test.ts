import { spawnSync } from 'node:child_process';
import { SERVICE_NODE_FLAGS, serviceEnv, serviceNodeFlags } from '../../../cli/node-flags';

describe('serviceNodeFlags', () => {
  it("adds dsat's flags after the launcher's own", () => {
    expect(SERVICE_NODE_FLAGS).toEqual(
      expect.arrayContaining(['--max-semi-space-size=4', '--heap-growing-percent=200']),
    );
    expect(serviceNodeFlags(['--require', 'tsx/cjs'], '')).toEqual([
      '--require',
      'tsx/cjs',
      ...SERVICE_NODE_FLAGS,
    ]);
  });

  it('leaves a flag to the user who set it, on the command line or in NODE_OPTIONS, in any spelling', () => {
    const others = (name: string) => SERVICE_NODE_FLAGS.filter((f) => !f.startsWith(name));
    expect(serviceNodeFlags(['--max-semi-space-size=16'], '')).toEqual([
      '--max-semi-space-size=16',
      ...others('--max-semi-space-size'),
    ]);
    expect(serviceNodeFlags(['--heap_growing_percent=50'], '')).toEqual([
      '--heap_growing_percent=50',
      ...others('--heap-growing-percent'),
    ]);
    expect(serviceNodeFlags([], '--inspect  --max-semi-space-size=32')).toEqual(
      others('--max-semi-space-size'),
    );
    // Another flag of the user's is no reason to drop dsat's.
    expect(serviceNodeFlags([], '--max-old-space-size=512')).toEqual([...SERVICE_NODE_FLAGS]);
  });

  it('names only flags this node accepts (a node that dropped one would not start a service)', () => {
    const run = spawnSync(process.execPath, [...SERVICE_NODE_FLAGS, '-e', ''], {
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});

describe('serviceEnv', () => {
  it('adds MALLOC_ARENA_MAX=2 to the environment a service starts with', () => {
    expect(serviceEnv({ PATH: '/bin' })).toEqual({ PATH: '/bin', MALLOC_ARENA_MAX: '2' });
  });

  it("keeps the user's own value, even an empty one", () => {
    expect(serviceEnv({ MALLOC_ARENA_MAX: '8' }).MALLOC_ARENA_MAX).toBe('8');
    expect(serviceEnv({ MALLOC_ARENA_MAX: '' }).MALLOC_ARENA_MAX).toBe('');
  });
});
