import { spawnSync } from 'node:child_process';
import path from 'node:path';

const ROOT = path.join(__dirname, '../../..');

/**
 * Runs `script` in a fresh node (the sources through tsx) and returns the packages it loaded: what
 * every service process carries in memory.
 */
function packagesLoadedBy(script: string): string[] {
  const run = spawnSync(
    process.execPath,
    [
      '-r',
      'tsx/cjs',
      '-e',
      `${script}
       const names = new Set();
       for (const file of Object.keys(require.cache)) {
         const m = /node_modules\\/((@[^/]+\\/)?[^/]+)\\//.exec(file);
         if (m) names.add(m[1]);
       }
       console.log(JSON.stringify([...names]));`,
    ],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } },
  );
  expect(run.stderr).toBe('');
  return JSON.parse(run.stdout) as string[];
}

const OPTIONAL = ['jose', 'msgpackr', 'nice-grpc-server-reflection', 'google-protobuf'];

describe('modules a service loads only when it uses them', () => {
  it('leaves token checks, msgpack and reflection unloaded in a process that uses none', () => {
    const loaded = packagesLoadedBy(`
      require('./services/shared/grpc-server');
      require('./services/shared/auth');
      const { codecFor } = require('./sdk/codecs');
      codecFor('application/json').encode({ a: 1 });`);
    expect(loaded).toEqual(expect.arrayContaining(['@grpc/grpc-js', 'nice-grpc']));
    for (const name of OPTIONAL) expect(loaded).not.toContain(name);
  });

  it('loads each when it is used', () => {
    const loaded = packagesLoadedBy(`
      const { codecFor } = require('./sdk/codecs');
      codecFor('application/msgpack').encode({ a: 1 });
      const key = require('node:path').join(require('node:os').tmpdir(), 'dsat-optional-' + process.pid);
      require('node:fs').writeFileSync(key, 'k'.repeat(32));
      require('./services/shared/auth').createAuthMiddleware({ authKey: key });
      require('node:fs').rmSync(key);`);
    expect(loaded).toEqual(expect.arrayContaining(['jose', 'msgpackr']));
  });
});
