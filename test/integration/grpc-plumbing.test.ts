import { ClientError, ServerError, Status } from 'nice-grpc-common';
import { BadRequest, ErrorInfo, RichClientError } from 'nice-grpc-error-details';
import type {
  StatusServiceImplementation,
  WatchEventsResponse,
} from '../../gen/dsat/status/v1/status';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { Transition } from '../../gen/dsat/task/v1/task';
import { loadConfig, statusConfigSpec } from '../../services/shared/config';
import { invalidArgument } from '../../services/shared/errors';
import { createDsatChannel, createDsatClient } from '../../services/shared/grpc-client';
import type { GrpcServer } from '../../services/shared/grpc-server';
import {
  serviceEntry,
  startGrpcServer,
  withoutResponseCopy,
} from '../../services/shared/grpc-server';
import { createLogger } from '../../services/shared/logger';
import type { TerminatorContext } from '../../services/shared/terminator';
import { withUnimplemented } from '../../services/shared/unimplemented';
import { healthCheck, listServices, openHealthWatch } from '../helpers/plain-grpc';
import { within } from '../helpers/processes';

jest.setTimeout(30_000);

const logger = createLogger('test', 'silent');
const config = (grace = 1_000) =>
  loadConfig(
    statusConfigSpec,
    { port: '0', shutdownGrace: String(grace), maxMessageSize: '1MiB' },
    {},
  );

async function serve(
  impl: Partial<StatusServiceImplementation<TerminatorContext>>,
  grace = 1_000,
): Promise<GrpcServer> {
  return startGrpcServer({
    name: 'test',
    config: config(grace),
    logger,
    services: [
      serviceEntry(StatusServiceDefinition, withUnimplemented(StatusServiceDefinition, impl)),
    ],
  });
}

describe('the server factory', () => {
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('stops well within its grace period while a client holds an open stream', async () => {
    server = await serve({}, 10_000);
    const watch = openHealthWatch(server.address);
    expect(await within(watch.opened, 5_000, 'health watch open')).toBe('SERVING');
    const started = Date.now();
    await server.stop();
    expect(Date.now() - started).toBeLessThan(2_000);
    const status = await within(watch.ended, 5_000, 'stream end');
    expect([Status.UNAVAILABLE, Status.CANCELLED]).toContain(status.code);
    watch.close();
  });

  it('forces a handler that ignores its signal once the grace period is over', async () => {
    let handlerStarted!: () => void;
    const started = new Promise<void>((resolve) => (handlerStarted = resolve));
    server = await serve(
      {
        // eslint-disable-next-line require-yield
        async *watchEvents() {
          handlerStarted();
          // Ignores context.signal on purpose: only forceShutdown can end this call.
          await new Promise((resolve) => setTimeout(resolve, 20_000).unref());
        },
      },
      1_000,
    );
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(server.address));
    const consuming = (async () => {
      for await (const _ of client.watchEvents({})) void _;
    })().catch((err: unknown) => err);
    await within(started, 5_000, 'handler running');
    const stopAt = Date.now();
    await server.stop();
    const took = Date.now() - stopAt;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(4_000);
    const err = await consuming;
    expect(err).toBeInstanceOf(ClientError);
  });

  it('T41: serves reflection only when asked to, so a client cannot list the services of a production port', async () => {
    server = await serve({});
    const err = await listServices(server.address).catch((e: unknown) => e);
    expect((err as { code?: number }).code).toBe(Status.UNIMPLEMENTED);
    await server.stop();
    server = await startGrpcServer({
      name: 'test',
      config: loadConfig(statusConfigSpec, { port: '0', reflection: true }, {}),
      logger,
      services: [
        serviceEntry(StatusServiceDefinition, withUnimplemented(StatusServiceDefinition, {})),
      ],
    });
    expect(await listServices(server.address)).toContain('dsat.status.v1.StatusService');
  });

  it('sends the responses of fullResponses methods without the fromPartial copy, and others with it', async () => {
    const d = withoutResponseCopy(StatusServiceDefinition, ['watchEvents']);
    expect(d.methods.watchEvents.responseType.fromPartial).toBeUndefined();
    expect(d.methods.watchTask.responseType.fromPartial).toBeDefined();
    expect(d.methods.watchEvents.requestType).toBe(
      StatusServiceDefinition.methods.watchEvents.requestType,
    );
    const whole: WatchEventsResponse = {
      transitions: [Transition.fromPartial({ taskId: 't1', stage: 's1', revision: 7 })],
      revision: 7,
    };
    server = await startGrpcServer({
      name: 'test',
      config: config(),
      logger,
      services: [
        serviceEntry(
          StatusServiceDefinition,
          withUnimplemented(StatusServiceDefinition, {
            async *watchEvents() {
              yield whole;
            },
            // A partial response, filled in by the copy.
            async *watchTask() {
              yield { event: { $case: 'transition', value: { taskId: 't1', attempt: 2 } } };
            },
          }),
          ['watchEvents'],
        ),
      ],
    });
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(server.address));
    for await (const m of client.watchEvents({})) expect(m).toEqual(whole);
    for await (const m of client.watchTask({ taskId: 't1' })) {
      expect(m).toEqual({
        event: { $case: 'transition', value: Transition.fromPartial({ taskId: 't1', attempt: 2 }) },
      });
    }
  });

  it('reports NOT_SERVING once shutdown starts', async () => {
    server = await serve({});
    expect(await healthCheck(server.address)).toBe('SERVING');
    server.setServing(false);
    expect(await healthCheck(server.address)).toBe('NOT_SERVING');
    expect(await healthCheck(server.address, 'dsat.status.v1.StatusService')).toBe('NOT_SERVING');
  });

  it('maps a domain error to its status with ErrorInfo and the bad field named', async () => {
    server = await serve({
      getTask: () => Promise.reject(invalidArgument('task_id', 'must be a UUID')),
      listTasks: () => Promise.reject(new Error('secret internals')),
    });
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(server.address));
    const err = await client.getTask({ taskId: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RichClientError);
    const rich = err as RichClientError;
    expect(rich.code).toBe(Status.INVALID_ARGUMENT);
    expect(rich.details).toBe('task_id: must be a UUID');
    const info = rich.extra.find((d) => d.$type === ErrorInfo.$type) as ErrorInfo | undefined;
    expect(info?.reason).toBe('INVALID_FIELD');
    expect(info?.metadata.field).toBe('task_id');
    const bad = rich.extra.find((d) => d.$type === BadRequest.$type) as BadRequest | undefined;
    expect(bad?.fieldViolations[0]?.field).toBe('task_id');

    const internal = (await client.listTasks({}).catch((e: unknown) => e)) as ClientError;
    expect(internal.code).toBe(Status.INTERNAL);
    expect(internal.details).not.toContain('secret');
  });

  it('retries idempotent methods on UNAVAILABLE and never retries the others', async () => {
    let reads = 0;
    let deletes = 0;
    server = await serve({
      getTask: async () => {
        reads += 1;
        if (reads <= 2) throw new ServerError(Status.UNAVAILABLE, 'not yet');
        return { task: { taskId: 't1' } };
      },
      deleteTasks: async () => {
        deletes += 1;
        throw new ServerError(Status.UNAVAILABLE, 'not now');
      },
    });
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(server.address));
    const res = await client.getTask({ taskId: 't1' });
    expect(res.task?.taskId).toBe('t1');
    expect(reads).toBe(3);
    await expect(client.deleteTasks({ taskIds: ['t1'] })).rejects.toMatchObject({
      code: Status.UNAVAILABLE,
    });
    expect(deletes).toBe(1);
  });

  it('refuses a message above the size limit with RESOURCE_EXHAUSTED and stays healthy', async () => {
    server = await serve({ getTask: () => Promise.resolve({}) });
    const client = createDsatClient(StatusServiceDefinition, createDsatChannel(server.address), {
      retryMaxAttempts: 1,
    });
    const err = (await client
      .getTask({ taskId: 'x'.repeat(1024 * 1024 + 1) })
      .catch((e: unknown) => e)) as ClientError;
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(await healthCheck(server.address)).toBe('SERVING');
    await expect(client.getTask({ taskId: 'ok' })).resolves.toEqual({ task: undefined });
  });
});
