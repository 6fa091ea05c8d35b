import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(60_000);
const run = promisify(execFile);

describe('the generated-code drift check', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('passes on gen/ as generated and fails once a generated file is edited by hand', async () => {
    const copy = path.join(tmp.path, 'gen');
    fs.cpSync(path.join(REPO_ROOT, 'gen'), copy, { recursive: true });
    await expect(
      run('bash', ['scripts/check-gen.sh', copy], { cwd: REPO_ROOT }),
    ).resolves.toBeTruthy();

    const file = path.join(copy, 'dsat/task/v1/task.ts');
    fs.appendFileSync(file, '\n// edited by hand\n');
    const failed = await run('bash', ['scripts/check-gen.sh', copy], { cwd: REPO_ROOT }).catch(
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed).toMatchObject({ code: 1 });
    expect((failed as { stderr: string }).stderr).toContain('task.ts');
  });
});
