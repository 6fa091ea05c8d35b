import fs from 'node:fs';
import path from 'node:path';
import type { ChannelOptions } from '@grpc/grpc-js';
import type { Server, ServiceImplementation, TsProtoServiceDefinition } from 'nice-grpc';
import { createServer } from 'nice-grpc';
import { errorDetailsServerMiddleware } from 'nice-grpc-error-details';
import { HealthDefinition, HealthServiceImpl, HealthState } from 'nice-grpc-server-health';
import type * as Reflection from 'nice-grpc-server-reflection';
import type { ServerConfig } from './config';
import type { Logger } from './logger';
import { createErrorMiddleware, createLoggingMiddleware } from './grpc-errors';
import { tracingServerMiddleware } from './grpc-tracing';
import { withWireCodecs } from './message-codecs';
import type { TerminatorContext } from './terminator';
import { createAccessMiddleware } from './auth';
import { createTerminatorMiddleware } from './terminator';
import { peerIdentityInterceptor } from './peer-identity';
import { serverCredentials } from './transport-security';

/** The descriptor set of proto/, written by `npm run gen`, which server reflection serves. */
export const DESCRIPTOR_SET_PATH = path.join(__dirname, '../../gen/dsat.binpb');

export type DsatServer = Server<TerminatorContext>;

/** One service to serve: its generated definition and its implementation. */
export interface ServiceEntry {
  readonly fullName: string;
  add(server: DsatServer): void;
}

/**
 * One service to serve. `fullResponses` names streaming methods whose implementation is typed to
 * yield whole messages (the generated type, not nice-grpc's DeepPartial): their responses are
 * encoded as they are, where nice-grpc would first copy each one with `fromPartial` to fill in
 * defaults. On the hot streams (the feed, write answers, Assigns) that copy was 2-6% of a
 * service's allocations.
 */
export function serviceEntry<D extends TsProtoServiceDefinition>(
  definition: D,
  implementation: ServiceImplementation<D, TerminatorContext>,
  fullResponses: readonly (keyof D['methods'] & string)[] = [],
): ServiceEntry {
  return {
    fullName: definition.fullName,
    add: (server) =>
      server.add(withoutResponseCopy(withWireCodecs(definition), fullResponses), implementation),
  };
}

/** The definition with `fromPartial` taken off the responses of `methods`. */
export function withoutResponseCopy<D extends TsProtoServiceDefinition>(
  definition: D,
  methods: readonly string[],
): D {
  if (methods.length === 0) return definition;
  const copy = { ...definition.methods };
  for (const name of methods) {
    const m = copy[name]!;
    copy[name] = { ...m, responseType: { ...m.responseType, fromPartial: undefined } };
  }
  return { ...definition, methods: copy };
}

export interface GrpcServerOptions {
  readonly name: string;
  readonly config: ServerConfig;
  readonly logger: Logger;
  readonly services: readonly ServiceEntry[];
}

export interface GrpcServer {
  /** `host:port` as bound, e.g. `127.0.0.1:40123`. */
  readonly address: string;
  readonly port: number;
  readonly health: HealthState;
  /** Reports SERVING or NOT_SERVING for the whole server and each of its services. */
  setServing(serving: boolean): void;
  /** Aborts every open stream with UNAVAILABLE. */
  terminateStreams(): void;
  /** Graceful shutdown; after the grace period, open calls are cancelled. */
  stop(): Promise<void>;
}

export function serverChannelOptions(config: ServerConfig): ChannelOptions {
  return {
    'grpc.keepalive_time_ms': config.keepaliveTime,
    'grpc.keepalive_timeout_ms': config.keepaliveTimeout,
    'grpc.keepalive_permit_without_calls': 1,
    // Clients ping every keepaliveTime too; accept that rate.
    'grpc.http2.min_ping_interval_without_data_ms': Math.min(config.keepaliveTime, 1_000),
    'grpc.max_receive_message_length': config.maxMessageSize,
    'grpc.max_send_message_length': config.maxMessageSize,
    'grpc.max_concurrent_streams': config.maxConcurrentStreams,
  };
}

let descriptorSet: Uint8Array | undefined;
function loadDescriptorSet(): Uint8Array {
  descriptorSet ??= new Uint8Array(fs.readFileSync(DESCRIPTOR_SET_PATH));
  return descriptorSet;
}

/**
 * Starts a dsat gRPC server: health (`grpc.health.v1`), reflection, keepalive, message size limit,
 * a span per unary call, logging and error middleware, and a terminator so shutdown never hangs on an open stream.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { config, logger, services } = options;
  const terminator = createTerminatorMiddleware();
  const server = createServer({
    ...serverChannelOptions(config),
    // Client certificates name their holder: handlers read it (PEER_IDENTITY), clients cannot forge it.
    ...(config.tlsClientAuth ? { interceptors: [peerIdentityInterceptor] } : {}),
  } as ChannelOptions)
    .use(tracingServerMiddleware)
    .use(createLoggingMiddleware(logger))
    .use(errorDetailsServerMiddleware)
    .use(createErrorMiddleware(logger))
    .use(createAccessMiddleware(config))
    .use(terminator);

  const health = HealthState();
  server.add(HealthDefinition, HealthServiceImpl(health));
  const names = services.map((s) => s.fullName);
  // Off unless asked for: a client should not learn every method from a production port.
  if (config.reflection) {
    // Loaded only here: it and google-protobuf are ~3 MB a service without reflection would carry.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const reflection = require('nice-grpc-server-reflection') as typeof Reflection;
    server.add(
      reflection.ServerReflectionService,
      reflection.ServerReflection(loadDescriptorSet(), names),
    );
  }
  for (const s of services) s.add(server);

  const credentials = serverCredentials(config);
  const port = await server
    .listen(`${config.host}:${config.port}`, credentials)
    .catch((err: Error) => {
      // grpc-js says "No address added out of total 1 resolved errors: [listen EADDRINUSE ...]".
      const why = err.message.includes('EADDRINUSE') ? 'the port is in use' : err.message;
      throw new Error(`${options.name} cannot listen on ${config.host}:${config.port}: ${why}`);
    });
  const address = `${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  const setServing = (serving: boolean) => {
    const status = serving ? 'healthy' : 'unhealthy';
    health.setStatus(status);
    for (const n of names) health.setStatus(status, n);
  };
  setServing(true);
  logger.info({ address, services: names }, `${options.name} listening`);

  let stopping: Promise<void> | undefined;
  return {
    address,
    port,
    health,
    setServing,
    terminateStreams: () => terminator.terminate(),
    stop() {
      stopping ??= (async () => {
        setServing(false);
        terminator.terminate();
        let timer: NodeJS.Timeout | undefined;
        const graceful = server.shutdown().then(() => true);
        const expired = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), config.shutdownGrace);
        });
        const clean = await Promise.race([graceful, expired]);
        clearTimeout(timer);
        if (!clean) {
          logger.warn(
            { graceMs: config.shutdownGrace },
            'grace period over: cancelling open calls',
          );
          server.forceShutdown();
        }
      })();
      return stopping;
    },
  };
}

/** Registers a server's part of the shutdown order: NOT_SERVING, end streams, stop. */
export function stopServerOnShutdown(
  shutdown: {
    on(
      phase: 'not-serving' | 'terminate-streams' | 'server',
      name: string,
      step: () => unknown,
    ): void;
  },
  name: string,
  server: GrpcServer,
): void {
  shutdown.on('not-serving', `${name} health`, () => server.setServing(false));
  shutdown.on('terminate-streams', `${name} streams`, () => server.terminateStreams());
  shutdown.on('server', `${name} server`, () => server.stop());
}
