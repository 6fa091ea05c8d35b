import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { ClientError, Metadata, Status } from 'nice-grpc-common';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { WorkerServiceDefinition } from '../../gen/dsat/worker/v1/worker';
import { createAuthMiddleware, METHOD_SCOPES } from '../../services/shared/auth';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import type { GrpcServer } from '../../services/shared/grpc-server';
import type { RunningProcess } from '../helpers/processes';
import { spawnDsat, UP_FREE_PORTS, upClientEnv, within } from '../helpers/processes';
import { startStubStatus } from '../helpers/stub-status';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

const SECRET = crypto.randomBytes(32).toString('hex');
const TLS = path.join(__dirname, '../fixtures/tls');
const pem = (name: string) => path.join(TLS, `${name}.pem`);

function token(scope: string, opts: { expiresIn?: string; secret?: string } = {}) {
  return new SignJWT({ scope })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(`client-${scope.replace(/ /g, '+') || 'none'}`)
    .setIssuedAt()
    .setExpirationTime(opts.expiresIn ?? '5m')
    .sign(Buffer.from(opts.secret ?? SECRET));
}

describe('bearer tokens with scopes', () => {
  const tmp = tempDir();
  const keyFile = path.join(tmp.path, 'auth.key');
  fs.writeFileSync(keyFile, SECRET);
  let server: GrpcServer | undefined;
  afterAll(async () => {
    await server?.stop();
    tmp.cleanup();
  });

  it('names a scope for every method of the four services, and none for anything else', () => {
    const methods = [
      RouterServiceDefinition,
      StatusServiceDefinition,
      TrackerServiceDefinition,
      WorkerServiceDefinition,
    ].flatMap((d) => Object.values(d.methods).map((m) => `/${d.fullName}/${m.name}`));
    const dsatPaths = Object.keys(METHOD_SCOPES).filter((p) => p.startsWith('/dsat.'));
    expect(dsatPaths.sort()).toEqual(methods.sort());
  });

  it('refuses to send a token in plain text, naming the option', async () => {
    const file = path.join(tmp.path, 'plain.jwt');
    fs.writeFileSync(file, await token('read'));
    const p = spawnDsat(['tasks', '--auth-token-file', file]);
    expect(await within(p.exited, 30_000, 'dsat tasks')).toBe(2);
    expect(p.stderr.join('\n')).toContain('--auth-token-file (DSAT_AUTH_TOKEN_FILE): needs TLS');
  });

  it('T35: refuses a method the table does not name, whatever the token holds', async () => {
    const auth = createAuthMiddleware({ authKey: keyFile });
    let ran = false;
    const call = {
      method: { path: '/dsat.router.v1.RouterService/SomethingNew' },
      request: {},
      // eslint-disable-next-line require-yield
      next: async function* () {
        ran = true;
        return Promise.resolve({});
      },
    } as unknown as Parameters<typeof auth>[0];
    const context = {
      metadata: Metadata({ authorization: `Bearer ${await token('admin')}` }),
    } as unknown as Parameters<typeof auth>[1];
    const err = await (async () => {
      for await (const _ of auth(call, context)) void _;
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: Status.PERMISSION_DENIED });
    expect(ran).toBe(false);
  });

  it('T34 and T35: no token, a malformed, expired or foreign one is UNAUTHENTICATED and runs nothing; a valid one without the scope is PERMISSION_DENIED', async () => {
    const stub = await startStubStatus({ authKey: keyFile });
    server = stub.server;
    const { ran } = stub;
    const channel = createDsatChannel(server.address);
    const client = createDsatClient(StatusServiceDefinition, channel, { retryMaxAttempts: 1 });
    const outcome = async (call: 'stats' | 'delete', authorization?: string) => {
      const metadata = Metadata(authorization === undefined ? {} : { authorization });
      const done =
        call === 'stats'
          ? client.getStoreStats({}, { metadata })
          : client.deleteTasks({ taskIds: ['x'] }, { metadata });
      return done.then(
        () => 'OK',
        (err: unknown) =>
          err instanceof ClientError ? `${Status[err.code]}: ${err.details}` : String(err),
      );
    };
    expect(await outcome('stats')).toMatch(/^UNAUTHENTICATED: authorization: a bearer token/);
    expect(await outcome('stats', 'Basic abc')).toMatch(/^UNAUTHENTICATED: .*"Bearer <token>"/);
    expect(await outcome('stats', 'Bearer not.a.jwt')).toMatch(/^UNAUTHENTICATED: .*not a valid/);
    expect(await outcome('stats', `Bearer ${await token('read', { expiresIn: '-1m' })}`)).toMatch(
      /^UNAUTHENTICATED: .*expired/,
    );
    const foreign = await token('read', { secret: crypto.randomBytes(32).toString('hex') });
    expect(await outcome('stats', `Bearer ${foreign}`)).toMatch(/^UNAUTHENTICATED: .*not signed/);
    expect(ran).toEqual([]);

    const reader = `Bearer ${await token('read')}`;
    expect(await outcome('stats', reader)).toBe('OK');
    // A worker's or a reader's token cannot reach an admin method: nothing is deleted.
    expect(await outcome('delete', reader)).toMatch(/^PERMISSION_DENIED: .*needs the admin scope/);
    expect(await outcome('delete', `Bearer ${await token('work')}`)).toMatch(/^PERMISSION_DENIED/);
    expect(ran).toEqual(['getStoreStats']);
    expect(await outcome('delete', `Bearer ${await token('admin')}`)).toBe('OK');
    expect(ran).toEqual(['getStoreStats', 'deleteTasks']);
    channel.close();
  });

  it('T40: one caller past its rate limit gets RESOURCE_EXHAUSTED, and runs nothing more; another caller is not slowed', async () => {
    const { server: limited, ran } = await startStubStatus({ authKey: keyFile, rateLimit: '100' });
    const channel = createDsatChannel(limited.address);
    try {
      const client = createDsatClient(StatusServiceDefinition, channel, { retryMaxAttempts: 1 });
      const as = (authorization: string) => ({ metadata: Metadata({ authorization }) });
      const greedy = as(`Bearer ${await token('read')}`);
      const codes = await Promise.all(
        Array.from({ length: 1_000 }, () =>
          client.getStoreStats({}, greedy).then(
            () => Status.OK,
            (err: unknown) => (err as ClientError).code,
          ),
        ),
      );
      const ok = codes.filter((c) => c === Status.OK).length;
      const exhausted = codes.filter((c) => c === Status.RESOURCE_EXHAUSTED).length;
      expect(ok + exhausted).toBe(1_000);
      // The bucket holds a second's worth; the burst takes longer than that only on a slow machine.
      expect(ok).toBeGreaterThanOrEqual(100);
      expect(exhausted).toBeGreaterThan(0);
      expect(ran).toHaveLength(ok);
      const other = await new SignJWT({ scope: 'read' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('someone-else')
        .setExpirationTime('5m')
        .sign(Buffer.from(SECRET));
      await expect(client.getStoreStats({}, as(`Bearer ${other}`))).resolves.toBeDefined();
    } finally {
      channel.close();
      await limited.stop();
    }
  });

  it('a mesh of processes with TLS and tokens runs the demo for a client whose token may submit, and refuses the others', async () => {
    const files = async (name: string, scope: string) => {
      const file = path.join(tmp.path, `${name}.jwt`);
      fs.writeFileSync(file, await token(scope, { expiresIn: '10m' }));
      return file;
    };
    const tls = {
      DSAT_TLS_CA: pem('ca'),
      DSAT_TLS_CERT: pem('server'),
      DSAT_TLS_KEY: pem('server-key'),
    };
    let up: RunningProcess | undefined;
    try {
      up = spawnDsat(
        ['up', '--processes', '--data-dir', path.join(tmp.path, 'data'), ...UP_FREE_PORTS],
        { ...tls, DSAT_AUTH_KEY: keyFile, DSAT_AUTH_TOKEN_FILE: await files('services', 'admin') },
      );
      await up.waitForLine(/^dsat is up/, 90_000);
      const at = { ...upClientEnv(up), DSAT_TLS_CA: pem('ca') };
      const as = async (scope: string | undefined, args: string[]) => {
        const env =
          scope === undefined
            ? at
            : { ...at, DSAT_AUTH_TOKEN_FILE: await files(scope.replace(/ /g, '-'), scope) };
        const p = spawnDsat(args, env);
        const code = await within(p.exited, 60_000, `dsat ${args.join(' ')}`);
        return { code, out: p.stdout.join('\n'), err: p.stderr.join('\n') };
      };
      const run = await as('submit read', ['submit', 'demo', '{"text":"signed"}', '--follow']);
      expect(run).toMatchObject({
        code: 0,
        out: expect.stringMatching(/SUCCEEDED: \{"text":"SIGNED"/),
      });
      const reader = await as('read', ['submit', 'demo', '{"text":"no"}']);
      expect(reader.code).toBe(1);
      expect(reader.err).toMatch(/PERMISSION_DENIED: .*SubmitTask needs the submit scope/);
      const taskId = /submitted (\S+)/.exec(run.out)![1]!;
      const worker = await as('work read', ['dead-letters', 'purge', taskId]);
      expect(worker.code).toBe(1);
      expect(worker.err).toMatch(/PERMISSION_DENIED: .*PurgeTasks needs the admin scope/);
      const anonymous = await as(undefined, ['tasks']);
      expect(anonymous.code).toBe(1);
      expect(anonymous.err).toMatch(/UNAUTHENTICATED: authorization: a bearer token is required/);
    } finally {
      up?.kill('SIGINT');
      if (up) await within(up.exited, 30_000, 'dsat up to stop');
    }
  });
});
