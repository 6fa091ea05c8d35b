import { spawnSync } from 'node:child_process';
import {
  SERVICE_NODE_FLAGS,
  SERVICE_NODE_FLAG_OVERRIDES,
  nodeFlagsOf,
  serviceEnv,
  serviceNodeFlags,
} from '../../../cli/node-flags';

describe('serviceNodeFlags', () => {
  it("adds dsat's flags after the launcher's own", () => {
    expect(SERVICE_NODE_FLAGS).toEqual(
      expect.arrayContaining([
        '--max-semi-space-size=4',
        '--heap-growing-percent=200',
        '--no-parallel-scavenge',
      ]),
    );
    expect(serviceNodeFlags('router', ['--require', 'tsx/cjs'], '')).toEqual([
      '--require',
      'tsx/cjs',
      ...SERVICE_NODE_FLAGS,
    ]);
  });

  it('leaves a flag to the user who set it, on the command line or in NODE_OPTIONS, in any spelling', () => {
    const others = (name: string) => SERVICE_NODE_FLAGS.filter((f) => !f.startsWith(name));
    expect(serviceNodeFlags('router', ['--max-semi-space-size=16'], '')).toEqual([
      '--max-semi-space-size=16',
      ...others('--max-semi-space-size'),
    ]);
    expect(serviceNodeFlags('router', ['--heap_growing_percent=50'], '')).toEqual([
      '--heap_growing_percent=50',
      ...others('--heap-growing-percent'),
    ]);
    expect(serviceNodeFlags('router', [], '--inspect  --max-semi-space-size=32')).toEqual(
      others('--max-semi-space-size'),
    );
    // A boolean flag is the user's in either form.
    expect(serviceNodeFlags('router', ['--parallel-scavenge'], '')).toEqual([
      '--parallel-scavenge',
      ...others('--no-parallel-scavenge'),
    ]);
    expect(serviceNodeFlags('router', [], '--no_parallel_scavenge')).toEqual(
      others('--no-parallel-scavenge'),
    );
    // Another flag of the user's is no reason to drop dsat's.
    expect(serviceNodeFlags('router', [], '--max-old-space-size=512')).toEqual([
      ...SERVICE_NODE_FLAGS,
    ]);
  });

  it('gives the status, tracker and worker services their own values, in place of the common ones', () => {
    expect(nodeFlagsOf('status')).toEqual([
      '--max-semi-space-size=8',
      '--heap-growing-percent=200',
      '--no-parallel-scavenge',
    ]);
    for (const service of ['tracker', 'worker']) {
      expect(nodeFlagsOf(service)).toEqual([
        '--max-semi-space-size=2',
        '--heap-growing-percent=100',
        '--no-parallel-scavenge',
      ]);
    }
    for (const service of ['router', ''])
      expect(nodeFlagsOf(service)).toEqual([...SERVICE_NODE_FLAGS]);
    // An override replaces a common flag: none is added or lost.
    const name = (f: string) => f.split('=')[0];
    for (const own of Object.values(SERVICE_NODE_FLAG_OVERRIDES)) {
      for (const f of own) expect(SERVICE_NODE_FLAGS.map(name)).toContain(name(f));
    }
    expect(serviceNodeFlags('status', ['--require', 'tsx/cjs'], '')).toEqual([
      '--require',
      'tsx/cjs',
      ...nodeFlagsOf('status'),
    ]);
    // The user's value still wins.
    expect(serviceNodeFlags('worker', [], '--max-semi-space-size=16')).toEqual([
      '--heap-growing-percent=100',
      '--no-parallel-scavenge',
    ]);
  });

  it('names only flags this node accepts (a node that dropped one would not start a service)', () => {
    for (const flags of [
      SERVICE_NODE_FLAGS,
      ...Object.keys(SERVICE_NODE_FLAG_OVERRIDES).map(nodeFlagsOf),
    ]) {
      const run = spawnSync(process.execPath, [...flags, '-e', ''], {
        encoding: 'utf8',
        env: { ...process.env, NODE_OPTIONS: '' },
      });
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
    }
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
