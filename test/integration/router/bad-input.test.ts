import { Status } from 'nice-grpc-common';
import { RouterServiceDefinition } from '../../../gen/dsat/router/v1/router';
import type { SubmitTaskRequest } from '../../../gen/dsat/router/v1/router';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { DsatClientError } from '../../../sdk/client';
import { createClient, toClientError } from '../../../sdk/client';
import { stageOutput, createWorker } from '../../../sdk/worker';
import { AsyncQueue } from '../../../services/shared/async-queue';
import { createDsatChannel, createDsatClient } from '../../../services/shared/grpc-client';
import { submitMany } from '../../helpers/process-mesh';
import type { RouterMesh } from '../../helpers/router-mesh';
import { linear, pipeline, silent, startRouterMesh } from '../../helpers/router-mesh';

jest.setTimeout(30_000);

describe('bad input', () => {
  let mesh: RouterMesh;
  beforeAll(async () => {
    mesh = await startRouterMesh({ router: { maxPayloadSize: '1KiB' } });
    await mesh.savePipeline(linear('good', ['work']));
  });
  afterAll(() => mesh.stop());

  const request = (over: Partial<SubmitTaskRequest>): SubmitTaskRequest => ({
    pipeline: 'good',
    payload: Buffer.from('{"a":1}'),
    contentType: 'application/json',
    idempotencyKey: '',
    priority: 0,
    traceparent: '',
    ...over,
  });

  async function refusal(over: Partial<SubmitTaskRequest>): Promise<DsatClientError> {
    const router = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(mesh.router.address),
    );
    const err = await router.submitTask(request(over)).then(
      () => undefined,
      (e: unknown) => toClientError(e) as DsatClientError,
    );
    if (!err) throw new Error('the submit was accepted');
    return err;
  }

  it.each([
    [
      'an unknown pipeline',
      { pipeline: 'nope' },
      Status.NOT_FOUND,
      'pipeline',
      'PIPELINE_NOT_FOUND',
    ],
    ['no pipeline', { pipeline: '' }, Status.INVALID_ARGUMENT, 'pipeline', 'INVALID_FIELD'],
    [
      'a malformed pipeline name',
      { pipeline: 'Bad Name' },
      Status.INVALID_ARGUMENT,
      'pipeline',
      'INVALID_FIELD',
    ],
    [
      'an empty JSON payload',
      { payload: Buffer.alloc(0) },
      Status.INVALID_ARGUMENT,
      'payload',
      'PAYLOAD_EMPTY',
    ],
    [
      'a payload over --max-payload-size',
      { payload: Buffer.alloc(1025, 32) },
      Status.RESOURCE_EXHAUSTED,
      'payload',
      'PAYLOAD_TOO_LARGE',
    ],
    [
      'an unknown content type',
      { contentType: 'application/x-pickle' },
      Status.INVALID_ARGUMENT,
      'content_type',
      'UNKNOWN_CONTENT_TYPE',
    ],
    [
      'a priority out of range',
      { priority: 1001 },
      Status.INVALID_ARGUMENT,
      'priority',
      'INVALID_FIELD',
    ],
    [
      'a too long idempotency key',
      { idempotencyKey: 'k'.repeat(129) },
      Status.INVALID_ARGUMENT,
      'idempotency_key',
      'INVALID_FIELD',
    ],
    [
      'a control character in the idempotency key',
      { idempotencyKey: 'a\nb' },
      Status.INVALID_ARGUMENT,
      'idempotency_key',
      'INVALID_FIELD',
    ],
    [
      'a malformed traceparent',
      { traceparent: '00-xyz' },
      Status.INVALID_ARGUMENT,
      'traceparent',
      'INVALID_FIELD',
    ],
  ] as const)('refuses %s, naming the field', async (_what, over, code, field, reason) => {
    const err = await refusal(over);
    expect(err.code).toBe(code);
    expect(err.field).toBe(field);
    expect(err.reason).toBe(reason);
  });

  it('refuses a watch whose skip_transition_id_prefix is too long, naming the field', async () => {
    const watch = mesh.status.watchEvents({ skipTransitionIdPrefix: 'x'.repeat(129) });
    const it = watch[Symbol.asyncIterator]();
    const err = toClientError(await it.next().catch((e: unknown) => e)) as DsatClientError;
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.field).toBe('skip_transition_id_prefix');
  });

  it('writes nothing for a refused submit', async () => {
    const before = await mesh.status.getStoreStats({});
    await refusal({ pipeline: 'nope' });
    await refusal({ priority: -5000 });
    const after = await mesh.status.getStoreStats({});
    expect(after.tasksCreated).toBe(before.tasksCreated);
  });

  it('acks each bad entry of a SubmitTasks batch with its code, and creates the good ones', async () => {
    const router = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(mesh.router.address),
    );
    const acks = new Map<string, { code: number; message: string }>();
    const q = new AsyncQueue<{ entries: { clientRef: string; task: SubmitTaskRequest }[] }>();
    q.push({
      entries: [
        { clientRef: 'ok', task: request({}) },
        { clientRef: 'unknown', task: request({ pipeline: 'nope' }) },
        { clientRef: 'big', task: request({ payload: Buffer.alloc(2000, 32) }) },
      ],
    });
    for await (const res of router.submitTasks(q)) {
      for (const a of res.acks) acks.set(a.clientRef, a);
      if (acks.size === 3) q.end();
    }
    expect(acks.get('ok')!.code).toBe(0);
    expect(acks.get('unknown')!.code).toBe(Status.NOT_FOUND);
    expect(acks.get('unknown')!.message).toContain('pipeline');
    expect(acks.get('big')!.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(acks.get('big')!.message).toContain('payload');
  });

  it('the same idempotency key returns the same task and creates nothing', async () => {
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    const a = await client.submit('good', { n: 1 }, { idempotencyKey: 'order-42' });
    const b = await client.submit('good', { n: 2 }, { idempotencyKey: 'order-42' });
    expect(b).toEqual({ taskId: a.taskId, traceId: a.traceId, duplicate: true });
    expect(a.duplicate).toBe(false);
    expect(a.traceId).toMatch(/^[0-9a-f]{32}$/);
    const router = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(mesh.router.address),
    );
    const ids = await submitMany(router, [
      { clientRef: 'x', task: request({ idempotencyKey: 'order-42' }) },
    ]);
    expect(ids.get('x')).toBe(a.taskId);
    client.close();
  });

  it('T16: a submit whose answer the client gave up on, sent again with its key, is one task, the same', async () => {
    const router = createDsatClient(
      RouterServiceDefinition,
      createDsatChannel(mesh.router.address),
      { retryMaxAttempts: 1 },
    );
    const keys = Array.from({ length: 30 }, (_, i) => `dropped-${i}`);
    let dropped = 0;
    for (const [i, key] of keys.entries()) {
      // Deadlines of 1 to 5 ms: most answers are lost, some after the task was made.
      const gaveUp = await router
        .submitTask(request({ idempotencyKey: key }), { deadline: Date.now() + 1 + (i % 5) })
        .then(
          () => false,
          (err: unknown) => (err as { code?: number }).code === Status.DEADLINE_EXCEEDED,
        );
      if (gaveUp) dropped++;
    }
    expect(dropped).toBeGreaterThan(0);
    const again = await Promise.all(
      keys.map((key) => router.submitTask(request({ idempotencyKey: key }))),
    );
    const once = await Promise.all(
      keys.map((key) => router.submitTask(request({ idempotencyKey: key }))),
    );
    expect(once.map((r) => r.taskId)).toEqual(again.map((r) => r.taskId));
    expect(once.every((r) => r.duplicate)).toBe(true);
    expect(new Set(again.map((r) => r.taskId)).size).toBe(keys.length);
    // Nothing else was made: the pipeline's tasks with these keys are exactly those answered.
    const made = new Set(again.map((r) => r.taskId));
    const withKey: string[] = [];
    let token = '';
    do {
      const page = await mesh.status.listTasks({
        filter: { pipeline: 'good', states: [], stage: '', actionKey: '' },
        pageSize: 1000,
        pageToken: token,
      });
      for (const t of page.tasks) if (keys.includes(t.idempotencyKey)) withKey.push(t.taskId);
      token = page.nextPageToken;
    } while (token !== '');
    expect(new Set(withKey)).toEqual(made);
    expect(withKey).toHaveLength(keys.length);
  });

  it('the client SDK refuses an unknown content type before any call, naming content_type', async () => {
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    await expect(
      client.submit('good', 'x', { contentType: 'text/x-script' }),
    ).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      field: 'content_type',
    });
    client.close();
  });

  it('fails a task whose result picks an undeclared next stage, with UNDECLARED_NEXT_STAGE', async () => {
    await mesh.savePipeline(
      pipeline('branchy', [
        { name: 'pick', next: ['left', 'right'] },
        { name: 'left' },
        { name: 'right' },
      ]),
    );
    const w = createWorker({
      routers: [mesh.router.address],
      logger: silent,
      handlers: {
        pick: (x) => stageOutput(x, { next: ['middle'] }),
        left: (x) => x,
        right: (x) => x,
      },
    });
    const client = createClient({ router: mesh.router.address, status: mesh.statusAddress });
    try {
      const { taskId } = await client.submit('branchy', { x: 1 });
      await expect(client.result(taskId, { timeoutMs: 10_000 })).rejects.toMatchObject({
        state: TaskState.TASK_STATE_FAILED,
        error: { code: 'UNDECLARED_NEXT_STAGE' },
      });
      const task = await mesh.task(taskId);
      expect(task.lastError?.message).toContain('middle');
    } finally {
      client.close();
      await w.stop();
    }
  });
});
