import { spawnDsat, within } from '../helpers/processes';

jest.setTimeout(30_000);

describe('a bad configuration', () => {
  it('stops a service with every bad key named and exit code 2', async () => {
    const p = spawnDsat([
      'status',
      '--port',
      'abc',
      '--data-dir',
      '/etc/passwd',
      '--shutdown-grace',
      'soon',
    ]);
    const code = await within(p.exited, 15_000, 'exit on bad config');
    expect(code).toBe(2);
    const err = p.stderr.join('\n');
    expect(err).toContain('--port (DSAT_STATUS_PORT): "abc" is not an integer');
    expect(err).toContain('--data-dir (DSAT_DATA_DIR): /etc/passwd is not a directory');
    expect(err).toContain('--shutdown-grace (DSAT_SHUTDOWN_GRACE)');
  });

  it('stops dsat up with the flags of every service named', async () => {
    const p = spawnDsat(['up', '--router-port', 'abc', '--data-dir', '/etc/passwd/dsat'], {
      DSAT_KEEPALIVE_TIME: 'often',
    });
    const code = await within(p.exited, 15_000, 'exit on bad config');
    expect(code).toBe(2);
    const err = p.stderr.join('\n');
    expect(err).toContain('--router-port (DSAT_ROUTER_PORT)');
    expect(err).toContain('--data-dir (DSAT_DATA_DIR)');
    expect(err).toContain('--keepalive-time (DSAT_KEEPALIVE_TIME)');
  });
});
