import fs from 'node:fs';
import path from 'node:path';
import { spawnDsat, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(60_000);

/** Preloaded into the process: writes the dsat modules it loaded to DSAT_TEST_LOADED on exit. */
const RECORD_LOADED = `
process.on('exit', () => {
  const root = ${JSON.stringify(path.resolve(__dirname, '../..'))};
  const files = Object.keys(require.cache)
    .filter((f) => f.startsWith(root) && !f.includes('node_modules'))
    .map((f) => f.slice(root.length + 1).replace(/^dist\\//, '').replace(/\\.[jt]s$/, ''));
  require('node:fs').writeFileSync(process.env.DSAT_TEST_LOADED, files.join('\\n'));
});
`;

describe('a service process started by the dsat CLI', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('loads its own service and none of the others, nor `up` and the benchmark', async () => {
    const preload = path.join(tmp.path, 'record-loaded.js');
    const loaded = path.join(tmp.path, 'loaded.txt');
    fs.writeFileSync(preload, RECORD_LOADED);
    const status = spawnDsat(
      ['status', '--port', '0', '--data-dir', path.join(tmp.path, 'data')],
      { DSAT_TEST_LOADED: loaded },
      ['--require', preload],
    );
    await status.waitForLine(/listening on/, 30_000);
    status.kill('SIGTERM');
    await within(status.exited, 15_000, 'the status service to stop');

    const files = fs.readFileSync(loaded, 'utf8').split('\n');
    expect(files).toContain('services/status/server');
    expect(files).toContain('services/status/status-store');
    const others = files.filter((f) =>
      /^(services\/(router|tracker|worker)\/|cli\/(commands\/|program)|bench\/)/.test(f),
    );
    expect(others).toEqual([]);
  });
});
