import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Clients made with grpc-js and proto-loader alone, as any user's tooling would. */
function load(file: string) {
  const def = protoLoader.loadSync(path.join(__dirname, '../fixtures/grpc', file), {
    keepCase: true,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

type Ctor = new (
  address: string,
  creds: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => grpc.Client;

export function healthCheck(
  address: string,
  service = '',
  options: grpc.ChannelOptions = {},
): Promise<string> {
  const pkg = load('health.proto') as unknown as { grpc: { health: { v1: { Health: Ctor } } } };
  const client = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure(), options);
  return new Promise((resolve, reject) => {
    (
      client as unknown as {
        Check(
          req: object,
          opts: grpc.CallOptions,
          cb: (err: grpc.ServiceError | null, res: { status: string }) => void,
        ): void;
      }
    ).Check({ service }, { deadline: Date.now() + 5000 }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status);
    });
  });
}

/** Opens a health Watch stream and leaves it open; returns the call to cancel later. */
export function openHealthWatch(address: string): {
  call: grpc.ClientReadableStream<{ status: string }>;
  /** The first status the server sent: the stream is open on its side. */
  opened: Promise<string>;
  ended: Promise<grpc.StatusObject>;
  close(): void;
} {
  const pkg = load('health.proto') as unknown as { grpc: { health: { v1: { Health: Ctor } } } };
  const client = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  const call = (
    client as unknown as {
      Watch(req: object): grpc.ClientReadableStream<{ status: string }>;
    }
  ).Watch({ service: '' });
  const opened = new Promise<string>((resolve) => {
    call.on('data', (m: { status: string }) => resolve(m.status));
  });
  const ended = new Promise<grpc.StatusObject>((resolve) => {
    call.on('status', resolve);
    call.on('error', () => undefined);
  });
  return { call, opened, ended, close: () => client.close() };
}

export function listServices(address: string): Promise<string[]> {
  const pkg = load('reflection.proto') as unknown as {
    grpc: { reflection: { v1: { ServerReflection: Ctor } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(
    address,
    grpc.credentials.createInsecure(),
  );
  return new Promise((resolve, reject) => {
    const call = (
      client as unknown as {
        ServerReflectionInfo(opts: grpc.CallOptions): grpc.ClientDuplexStream<
          object,
          {
            list_services_response?: { service: { name: string }[] };
            error_response?: { error_message: string };
          }
        >;
      }
    ).ServerReflectionInfo({ deadline: Date.now() + 5000 });
    call.on('data', (res) => {
      call.end();
      client.close();
      if (res.list_services_response)
        resolve(res.list_services_response.service.map((s: { name: string }) => s.name));
      else reject(new Error(res.error_response?.error_message ?? 'no list_services_response'));
    });
    call.on('error', reject);
    call.write({ list_services: '*' });
  });
}
