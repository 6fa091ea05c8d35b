import crypto from 'node:crypto';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { WorkerServiceDefinition } from '../../gen/dsat/worker/v1/worker';
import { healthCheck } from '../helpers/plain-grpc';
import type { RunningProcess } from '../helpers/processes';
import { spawnDsat, UP_FREE_PORTS, upAddress, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';

jest.setTimeout(180_000);

const SERVICES = {
  status: StatusServiceDefinition,
  router: RouterServiceDefinition,
  tracker: TrackerServiceDefinition,
  worker: WorkerServiceDefinition,
} as const;
type Name = keyof typeof SERVICES;

const bytes = (b: Buffer) => b;

/** One call of `path` whose request is `body` as it is, whatever the method's message type. */
function rawCall(
  client: grpc.Client,
  method: { path: string; requestStream: boolean; responseStream: boolean },
  body: Buffer,
): Promise<grpc.StatusObject> {
  const options = { deadline: Date.now() + 3_000 };
  return new Promise((resolve) => {
    const done = (call: grpc.ClientReadableStream<Buffer> | grpc.ClientWritableStream<Buffer>) => {
      call.on('status', resolve);
      call.on('error', () => undefined);
      call.on('data', () => undefined);
    };
    if (!method.requestStream && !method.responseStream) {
      const call = client.makeUnaryRequest(
        method.path,
        bytes,
        bytes,
        body,
        new grpc.Metadata(),
        options,
        () => undefined,
      );
      call.on('status', resolve);
    } else if (!method.requestStream) {
      done(client.makeServerStreamRequest(method.path, bytes, bytes, body, options));
    } else {
      const call = method.responseStream
        ? client.makeBidiStreamRequest(method.path, bytes, bytes, new grpc.Metadata(), options)
        : client.makeClientStreamRequest(method.path, bytes, bytes, options, () => undefined);
      done(call);
      call.write(body);
      call.end();
    }
  });
}

function methodsOf(name: Name) {
  const d = SERVICES[name];
  return Object.values(d.methods).map((m) => ({
    path: `/${d.fullName}/${m.name}`,
    requestStream: m.requestStream,
    responseStream: m.responseStream,
  }));
}

describe('what the wire may carry, against the four services of dsat up --processes', () => {
  const tmp = tempDir();
  let up: RunningProcess;
  const address = {} as Record<Name, string>;
  const clients: grpc.Client[] = [];
  const client = (name: Name) => {
    const c = new grpc.Client(address[name], grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': -1,
    });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    up = spawnDsat([
      'up',
      '--processes',
      '--data-dir',
      path.join(tmp.path, 'data'),
      ...UP_FREE_PORTS,
    ]);
    await up.waitForLine(/^dsat is up/, 90_000);
    for (const name of Object.keys(SERVICES) as Name[]) address[name] = upAddress(up, name);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    up.kill('SIGINT');
    await within(up.exited, 30_000, 'dsat up to stop');
    tmp.cleanup();
  });

  /** Every service still answers health, and no child process has died. */
  async function allServing() {
    for (const name of Object.keys(SERVICES) as Name[]) {
      expect({ name, health: await healthCheck(address[name]) }).toEqual({
        name,
        health: 'SERVING',
      });
    }
    expect(up.stderr.join('\n')).not.toMatch(/exited|unhandled|UnhandledPromiseRejection/i);
  }

  it('T29: a message of 4 MiB + 1 byte is RESOURCE_EXHAUSTED at every service, which stays healthy', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x41);
    for (const name of Object.keys(SERVICES) as Name[]) {
      const [first] = methodsOf(name);
      const status = await rawCall(client(name), first!, big);
      expect({ name, code: status.code }).toEqual({ name, code: grpc.status.RESOURCE_EXHAUSTED });
    }
    await allServing();
  });

  it('T38: random bytes as the request of every method get a status, never a crash', async () => {
    const seen: string[] = [];
    for (const name of Object.keys(SERVICES) as Name[]) {
      const c = client(name);
      for (const method of methodsOf(name)) {
        for (let i = 0; i < 5; i++) {
          const body = crypto.randomBytes(1 + crypto.randomInt(200));
          const { code } = await rawCall(c, method, body);
          // Bytes that happen to decode get the method's own answer; the rest INTERNAL
          // (undecodable) or a refusal naming a field. UNKNOWN would be an unhandled throw, and
          // UNAVAILABLE a server that went away.
          if (code === grpc.status.UNKNOWN || code === grpc.status.UNAVAILABLE) {
            seen.push(`${method.path}: ${grpc.status[code]} for ${body.toString('hex')}`);
          }
        }
      }
    }
    expect(seen).toEqual([]);
    await allServing();
  });

  it('T30: 150 streams at once on one connection, past max_concurrent_streams, are queued or refused; health stays SERVING', async () => {
    // A router's own limit is 1000 streams; this one allows 100.
    const limited = spawnDsat([
      'router',
      '--port',
      '0',
      '--status-address',
      address.status,
      '--tracker-address',
      upAddress(up, 'tracker'),
      '--max-concurrent-streams',
      '100',
    ]);
    try {
      const [line] = await limited.waitForLine(/listening on (\S+)/, 30_000);
      const at = line.split(' ').pop()!;
      const c = new grpc.Client(at, grpc.credentials.createInsecure());
      clients.push(c);
      const connect = methodsOf('router').find((m) => m.path.endsWith('/ConnectWorker'))!;
      const streams = Array.from({ length: 150 }, () =>
        c.makeBidiStreamRequest(connect.path, bytes, bytes, new grpc.Metadata(), {
          deadline: Date.now() + 20_000,
        }),
      );
      const ended = streams.map(
        (s) =>
          new Promise<number>((resolve) => {
            s.on('status', (st: grpc.StatusObject) => resolve(st.code));
            s.on('error', () => undefined);
            s.on('data', () => undefined);
          }),
      );
      // Open streams that say nothing: the router waits for Hello on each.
      await new Promise((r) => setTimeout(r, 1_000));
      // On a connection of its own: on the crowded one it would wait in the queue.
      const ownConnection = { 'grpc.use_local_subchannel_pool': 1 };
      expect(await healthCheck(at, '', ownConnection)).toBe('SERVING');
      for (const s of streams) s.cancel();
      const codes = await Promise.all(ended);
      expect(codes.every((code) => code === grpc.status.CANCELLED)).toBe(true);
      expect(await healthCheck(at)).toBe('SERVING');
      expect(limited.child.exitCode).toBeNull();
    } finally {
      limited.kill('SIGINT');
      await within(limited.exited, 20_000, 'the limited router to stop');
    }
    await allServing();
  });
});
