import os from 'node:os';
import path from 'node:path';
import { ClientError, Status } from 'nice-grpc-common';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { loadConfig, statusConfigSpec } from '../../services/shared/config';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import type { GrpcServer } from '../../services/shared/grpc-server';
import { channelCredentials } from '../../services/shared/transport-security';
import type { TlsSettings } from '../../services/shared/transport-security';
import type { RunningProcess } from '../helpers/processes';
import { spawnDsat, UP_FREE_PORTS, upAddress, within } from '../helpers/processes';
import { RawWorker } from '../helpers/raw-worker';
import { startStubStatus } from '../helpers/stub-status';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(120_000);

/** Made by scripts/make-test-certs.sh: "ca" signs server and worker, "other-ca" the stranger. */
const TLS = path.join(__dirname, '../fixtures/tls');
const pem = (name: string) => path.join(TLS, `${name}.pem`);
const SERVER = { tlsCert: pem('server'), tlsKey: pem('server-key'), tlsCa: pem('ca') };

describe('TLS and mTLS', () => {
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('T32: an mTLS server refuses a client without a certificate, one signed by another CA, and plain text; no handler runs', async () => {
    const stub = await startStubStatus({ ...SERVER, tlsClientAuth: true });
    server = stub.server;
    const call = async (tls: TlsSettings) => {
      const channel = createDsatChannel(server!.address, tls);
      try {
        const client = createDsatClient(StatusServiceDefinition, channel, {
          deadline: 3_000,
          retryMaxAttempts: 1,
        });
        return await client.getStoreStats({}).then(
          () => Status.OK,
          (err: unknown) => (err instanceof ClientError ? err.code : err),
        );
      } finally {
        channel.close();
      }
    };
    const refused = [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED];
    expect(refused).toContain(await call({ tlsCa: pem('ca') }));
    expect(refused).toContain(
      await call({ tlsCa: pem('ca'), tlsCert: pem('stranger'), tlsKey: pem('stranger-key') }),
    );
    expect(refused).toContain(await call({}));
    // A client that trusts another CA does not accept the server either.
    expect(refused).toContain(
      await call({ tlsCa: pem('other-ca'), tlsCert: pem('worker'), tlsKey: pem('worker-key') }),
    );
    expect(stub.ran).toEqual([]);
    expect(
      await call({ tlsCa: pem('ca'), tlsCert: pem('worker'), tlsKey: pem('worker-key') }),
    ).toBe(Status.OK);
    expect(stub.ran).toEqual(['getStoreStats']);
  });

  it('names the option a TLS setting is missing, before anything starts', () => {
    const load = (flags: Record<string, string | boolean>) =>
      loadConfig(statusConfigSpec, { port: '0', ...flags }, {});
    expect(() => load({ tlsCert: path.join(TLS, 'absent.pem') })).toThrow(
      /--tls-cert \(DSAT_TLS_CERT\): cannot read .*absent\.pem: no such file/,
    );
    expect(() => load({ tlsCa: __filename })).toThrow(/--tls-ca .*is not a PEM file/);
    const spawnedWith = spawnDsat([
      'status',
      '--port',
      '0',
      '--data-dir',
      path.join(os.tmpdir(), 'dsat-tls-never-made'),
      '--tls-cert',
      pem('server'),
      '--tls-client-auth',
    ]);
    return within(spawnedWith.exited, 20_000, 'status to refuse its flags').then((code) => {
      expect(code).toBe(2);
      const err = spawnedWith.stderr.join('\n');
      expect(err).toContain('--tls-key (DSAT_TLS_KEY): is required with --tls-cert');
      expect(err).toContain('--tls-ca (DSAT_TLS_CA): is required with --tls-client-auth');
      expect(err).not.toMatch(/status store open/);
    });
  });

  it('a mesh of processes with mTLS on every hop runs the demo for a client that shows its certificate, and only for it', async () => {
    const tmp = tempDir();
    const serviceEnv = {
      DSAT_TLS_CERT: pem('server'),
      DSAT_TLS_KEY: pem('server-key'),
      DSAT_TLS_CA: pem('ca'),
      DSAT_TLS_CLIENT_AUTH: 'true',
    };
    let up: RunningProcess | undefined;
    try {
      up = spawnDsat(
        ['up', '--processes', '--data-dir', path.join(tmp.path, 'data'), ...UP_FREE_PORTS],
        serviceEnv,
      );
      await up.waitForLine(/^dsat is up/, 90_000);
      const at = {
        DSAT_ROUTER_ADDRESS: upAddress(up, 'router'),
        DSAT_STATUS_ADDRESS: upAddress(up, 'status'),
        DSAT_TRACKER_ADDRESS: upAddress(up, 'tracker'),
      };
      const client = {
        DSAT_TLS_CA: pem('ca'),
        DSAT_TLS_CERT: pem('worker'),
        DSAT_TLS_KEY: pem('worker-key'),
      };
      const run = spawnDsat(['submit', 'demo', '{"text":"secret"}', '--follow'], {
        ...at,
        ...client,
      });
      expect(await within(run.exited, 60_000, 'the followed task')).toBe(0);
      expect(run.stdout.join('\n')).toMatch(/SUCCEEDED: \{"text":"SECRET"/);
      // T33: a worker's certificate names it; it cannot say Hello as another worker.
      const asWorker = channelCredentials({
        tlsCa: pem('ca'),
        tlsCert: pem('worker'),
        tlsKey: pem('worker-key'),
      })!;
      const impostor = new RawWorker(at.DSAT_ROUTER_ADDRESS, asWorker);
      impostor.hello('w2', ['parse']);
      const refused = await within(impostor.ended, 20_000, 'the impostor stream to end');
      expect(refused.code).toBe(Status.PERMISSION_DENIED);
      expect(refused.details).toMatch(
        /hello\.worker_id: "w2" is not the worker its certificate names \("w1"\)/,
      );
      expect(impostor.welcome).toBeUndefined();
      impostor.close();
      const honest = new RawWorker(at.DSAT_ROUTER_ADDRESS, asWorker);
      honest.hello('w1', ['parse']);
      await honest.until(() => honest.welcome !== undefined, 20_000, 'welcome');
      honest.close();

      const plain = spawnDsat(['tasks', '--timeout', '3s'], at);
      expect(await within(plain.exited, 30_000, 'a plain-text client')).toBe(1);
      expect(plain.stderr.join('\n')).toMatch(/^dsat: UNAVAILABLE/m);
    } finally {
      up?.kill('SIGINT');
      if (up) await within(up.exited, 30_000, 'dsat up to stop');
      tmp.cleanup();
    }
  });
});
