import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, spawnProcess } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

/** `npm run build` (scripts/build.sh): the compiled dsat that the image and the bench run. */
describe('the compiled build', () => {
  const out = path.join(REPO_ROOT, '.test-results', `dist-${process.pid}`);
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  it('compiles every entry point with the files they read at run time, and the services start from it', async () => {
    execFileSync('bash', ['scripts/build.sh', out], { cwd: REPO_ROOT, stdio: 'pipe' });
    for (const file of [
      'BUILT',
      'cli/main.js',
      'gen/dsat.binpb',
      'deploy/demo-handlers.js',
      'deploy/k8s/pipelines/demo.yaml',
      'bench/pipeline3/client.js',
      'bench/pipeline3/handlers.js',
    ]) {
      expect({ file, exists: fs.existsSync(path.join(out, file)) }).toEqual({ file, exists: true });
    }
    const main = path.join(out, 'cli/main.js');
    const version = execFileSync(process.execPath, [main, '--version'], { encoding: 'utf8' });
    expect(version.trim()).toBe(
      (
        JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
          version: string;
        }
      ).version,
    );
    const data = tempDir();
    const status = spawnProcess(process.execPath, [
      main,
      'status',
      '--port',
      '0',
      '--data-dir',
      data.path,
    ]);
    try {
      await status.waitForLine(/^status listening on \S+$/);
    } finally {
      status.kill('SIGKILL');
      data.cleanup();
    }
  });
});
