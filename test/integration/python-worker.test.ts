import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CallContext, Server } from 'nice-grpc';
import { createChannel, createClient, createServer, ServerError, Status } from 'nice-grpc';
import { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import type {
  Assignment,
  ConnectWorkerRequest,
  ConnectWorkerResponse,
  RouterServiceImplementation,
} from '../../gen/dsat/router/v1/router';
import { RouterServiceDefinition } from '../../gen/dsat/router/v1/router';
import type {
  StatusServiceImplementation,
  WatchTaskRequest,
} from '../../gen/dsat/status/v1/status';
import { StatusServiceDefinition } from '../../gen/dsat/status/v1/status';
import { Task, TaskState, Transition } from '../../gen/dsat/task/v1/task';
import { TrackerServiceDefinition } from '../../gen/dsat/tracker/v1/tracker';
import { withUnimplemented } from '../../services/shared/unimplemented';
import type { RunningProcess } from '../helpers/processes';
import { REPO_ROOT, spawnDsat, spawnProcess, within } from '../helpers/processes';
import { tempDir } from '../helpers/temp-dir';
import { isTerminalState } from '../../services/status/task-state-machine';

/**
 * Issue 9: "call services from any gRPC language". The Python client and worker in
 * examples/python are generated from proto/ alone and import only grpcio and protobuf.
 */

jest.setTimeout(60_000);

const execFileP = promisify(execFile);
/** Debian's interpreter, where python3-grpcio and python3-protobuf install. */
const PYTHON = process.env.DSAT_TEST_PYTHON ?? '/usr/bin/python3';
const EXAMPLES = path.join(REPO_ROOT, 'examples/python');
/** The TypeScript stages of the demo pipeline. */
const HANDLERS = path.join(REPO_ROOT, 'test/fixtures/python-demo-handlers.ts');

beforeAll(async () => {
  await execFileP('bash', [path.join(EXAMPLES, 'gen.sh')], {
    cwd: REPO_ROOT,
    env: { ...process.env, PYTHON },
  });
}, 120_000);

function python(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP(PYTHON, args, { cwd: EXAMPLES });
}

/** Polls `check` every 50 ms until it is true; fails after `ms`. */
async function waitUntil(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function spawnPython(script: string, args: string[]): RunningProcess {
  return spawnProcess(PYTHON, ['-u', path.join(EXAMPLES, script), ...args], {
    PYTHONDONTWRITEBYTECODE: '1',
  });
}

describe('Python stubs generated from proto/', () => {
  it('compile with protoc and import with grpcio and protobuf alone, every service and message', async () => {
    const { stdout } = await python([
      '-c',
      `
import importlib, json, pathlib, sys
sys.path.insert(0, "gen")
import grpc, google.protobuf
found = {}
for f in sorted(pathlib.Path("gen").rglob("*_pb2*.py")):
    mod = importlib.import_module(".".join(f.relative_to("gen").with_suffix("").parts))
    if f.name.endswith("_pb2.py"):
        for svc in mod.DESCRIPTOR.services_by_name.values():
            found[svc.full_name] = sorted(m.name for m in svc.methods)
from dsat.router.v1 import router_pb2, router_pb2_grpc
from dsat.status.v1 import status_pb2_grpc
hello = router_pb2.ConnectWorkerRequest(hello=router_pb2.Hello(worker_id="w", stages=["s"], protocol_version=1))
again = router_pb2.ConnectWorkerRequest.FromString(hello.SerializeToString())
assert again.WhichOneof("kind") == "hello" and again.hello.stages == ["s"]
assert callable(router_pb2_grpc.RouterServiceStub) and callable(status_pb2_grpc.StatusServiceStub)
print(json.dumps(found))
`,
    ]);
    const services = JSON.parse(stdout) as Record<string, string[]>;
    expect(Object.keys(services).sort()).toEqual([
      'dsat.router.v1.RouterService',
      'dsat.status.v1.StatusService',
      'dsat.tracker.v1.TrackerService',
      'dsat.worker.v1.WorkerService',
    ]);
    expect(services['dsat.router.v1.RouterService']).toEqual(
      expect.arrayContaining(['SubmitTask', 'SubmitTasks', 'ConnectWorker']),
    );
    expect(services['dsat.status.v1.StatusService']).toEqual(
      expect.arrayContaining(['GetTask', 'ListTasks', 'WatchTask']),
    );
  });

  it('load in the example client and worker, which check their arguments', async () => {
    await expect(python(['client.py', '--help'])).resolves.toMatchObject({
      stdout: expect.stringContaining('submit'),
    });
    await expect(python(['worker.py', '--help'])).resolves.toMatchObject({
      stdout: expect.stringContaining('--routers'),
    });
    await expect(
      python(['worker.py', '--routers', 'nowhere', '--concurrency', '0']),
    ).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--routers: 'nowhere' is not host:port[\s\S]*--concurrency/),
    });
  });
});

/** A queue that a test awaits with a deadline. */
class Channel<T> {
  private readonly items: T[] = [];
  private readonly takers: ((item: T) => void)[] = [];
  push(item: T): void {
    const taker = this.takers.shift();
    if (taker) taker(item);
    else this.items.push(item);
  }
  take(timeoutMs = 10_000, what = 'a message'): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return within(new Promise<T>((resolve) => this.takers.push(resolve)), timeoutMs, what);
  }
}

type WorkerMessage = ConnectWorkerRequest['kind'];
type Case = NonNullable<WorkerMessage>['$case'];
type ValueOf<C extends Case> = Extract<NonNullable<WorkerMessage>, { $case: C }>['value'];
const END = Symbol('end');

/** One ConnectWorker stream of the scripted router, driven by the test. */
class ScriptedStream {
  readonly fromWorker = new Channel<WorkerMessage | typeof END>();
  readonly toWorker = new Channel<ConnectWorkerResponse | Error | typeof END>();
  readonly log: WorkerMessage[] = [];
  send(kind: ConnectWorkerResponse['kind']): void {
    this.toWorker.push({ kind });
  }
  /** The next message from the worker, which must be of `$case`. */
  async next<C extends Case>($case: C): Promise<ValueOf<C>> {
    const m = await this.fromWorker.take(10_000, `a ${$case} message`);
    if (m === END || m?.$case !== $case) {
      throw new Error(`expected ${$case}, got ${m === END ? 'the end of the stream' : m?.$case}`);
    }
    return m.value as ValueOf<C>;
  }
  /** Reads messages until `done` says the collected ones are enough. */
  async until(done: (seen: NonNullable<WorkerMessage>[]) => boolean, what: string) {
    const seen: NonNullable<WorkerMessage>[] = [];
    while (!done(seen)) {
      const m = await this.fromWorker.take(10_000, what);
      if (m === END) throw new Error(`the worker closed the stream while waiting for ${what}`);
      if (m) seen.push(m);
    }
    return seen;
  }
}

function scriptedRouter(): {
  implementation: RouterServiceImplementation;
  streams: Channel<ScriptedStream>;
} {
  const streams = new Channel<ScriptedStream>();
  const implementation: Partial<RouterServiceImplementation> = {
    async *connectWorker(requests: AsyncIterable<ConnectWorkerRequest>, context: CallContext) {
      const s = new ScriptedStream();
      streams.push(s);
      void (async () => {
        for await (const r of requests) {
          s.log.push(r.kind);
          s.fromWorker.push(r.kind);
        }
        s.fromWorker.push(END);
      })().catch(() => s.fromWorker.push(END));
      context.signal.addEventListener('abort', () => s.toWorker.push(END));
      for (;;) {
        const out = await s.toWorker.take(60_000, 'the test script');
        if (out === END) return;
        if (out instanceof Error) throw out;
        yield out;
      }
    },
  };
  return { implementation: withUnimplemented(RouterServiceDefinition, implementation), streams };
}

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const assignment = (taskId: string, attempt: number, data: Buffer): Assignment => ({
  taskId,
  stage: 'enrich',
  attempt,
  pipeline: 'py-demo',
  input: { data, contentType: 'application/json' },
  deadline: undefined,
  traceparent: '',
  progress: undefined,
  pipelineVersion: 1,
  priority: 0,
  hops: 1,
  parentTaskId: '',
});
const creditIn = (seen: NonNullable<WorkerMessage>[]) =>
  seen.reduce((n, m) => n + (m.$case === 'credit' ? m.value.n : 0), 0);

describe('the Python worker against a scripted router', () => {
  let server: Server | undefined;
  let worker: RunningProcess | undefined;
  afterEach(async () => {
    worker?.kill('SIGKILL');
    await server?.forceShutdown();
  });

  it('says Hello, grants credit, heartbeats, reports in batches, honours Cancel, reconnects and drains', async () => {
    const router = scriptedRouter();
    server = createServer();
    server.add(RouterServiceDefinition, router.implementation);
    const port = await server.listen('127.0.0.1:0');
    worker = spawnPython('worker.py', [
      '--routers',
      `127.0.0.1:${port}`,
      '--worker-id',
      'py-scripted',
      '--stages',
      'enrich',
      '--concurrency',
      '2',
      '--delay-ms',
      '1000',
    ]);

    // Hello, Welcome, then credit for every slot.
    const s1 = await router.streams.take(10_000, 'a ConnectWorker stream');
    const hello = await s1.next('hello');
    expect(hello).toMatchObject({
      workerId: 'py-scripted',
      stages: ['enrich'],
      concurrency: 2,
      protocolVersion: 1,
      labels: expect.objectContaining({ lang: 'python' }),
    });
    s1.send({
      $case: 'welcome',
      value: {
        routerId: 'scripted',
        sessionId: 's1',
        protocolVersion: 1,
        heartbeatInterval: { seconds: 0, nanos: 100_000_000 },
      },
    });
    expect(await s1.next('credit')).toEqual({ n: 2 });

    // Two tasks in one Assign: both heartbeat at the Welcome's interval while they run.
    s1.send({
      $case: 'assign',
      value: {
        tasks: [
          assignment('t1', 1, json({ text: 'alpha', n: 1 })),
          assignment('t2', 3, json({ text: 'beta', n: 2 })),
        ],
      },
    });
    const beats = await s1.until(
      (seen) => seen.filter((m) => m.$case === 'heartbeats').length >= 2,
      'two heartbeats',
    );
    const beat = beats.find((m) => m.$case === 'heartbeats');
    expect(beat?.$case === 'heartbeats' && beat.value.heartbeats).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ taskId: 't1', attempt: 1 }),
        expect.objectContaining({ taskId: 't2', attempt: 3 }),
      ]),
    );
    expect(beats.some((m) => m.$case !== 'heartbeats')).toBe(false);

    // Cancel t2: its slot comes back as credit and it reports nothing; t1 reports its result.
    s1.send({
      $case: 'cancel',
      value: { attempts: [{ taskId: 't2', attempt: 3 }], reason: 'CANCEL_REQUESTED' },
    });
    const afterCancel = await s1.until(
      (seen) => creditIn(seen) >= 2 && seen.some((m) => m.$case === 'results'),
      't1 result and two credits',
    );
    const results = afterCancel.flatMap((m) => (m.$case === 'results' ? m.value.results : []));
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ taskId: 't1', attempt: 1, contentType: 'application/json' });
    expect(JSON.parse(Buffer.from(results[0]!.output).toString())).toEqual({
      text: 'alpha',
      n: 1,
      py: true,
      sha256: sha256('alpha'),
    });
    expect(afterCancel.some((m) => m.$case === 'failures')).toBe(false);
    s1.send({
      $case: 'ack',
      value: { entries: [{ taskId: 't1', attempt: 1, accepted: true, reason: '' }] },
    });

    // Bad input fails without retry; a refused report (stale attempt) is logged, not fatal.
    s1.send({ $case: 'assign', value: { tasks: [assignment('t3', 2, Buffer.from('not json'))] } });
    const afterBad = await s1.until(
      (seen) => seen.some((m) => m.$case === 'failures') && creditIn(seen) >= 1,
      't3 failure',
    );
    const failure = afterBad.find((m) => m.$case === 'failures');
    expect(failure?.$case === 'failures' && failure.value.failures).toEqual([
      expect.objectContaining({
        taskId: 't3',
        attempt: 2,
        error: expect.objectContaining({ code: 'BAD_INPUT', retryable: false }),
      }),
    ]);
    s1.send({
      $case: 'ack',
      value: { entries: [{ taskId: 't3', attempt: 2, accepted: false, reason: 'STALE_ATTEMPT' }] },
    });
    await worker.waitForLine(/refused failure t3 attempt 2: STALE_ATTEMPT/, 10_000, 'stderr');

    // The router goes away: the worker reconnects, says Hello again and grants all its slots.
    s1.toWorker.push(new ServerError(Status.UNAVAILABLE, 'router restarting'));
    const s2 = await router.streams.take(10_000, 'a second ConnectWorker stream');
    expect(await s2.next('hello')).toMatchObject({ workerId: 'py-scripted' });
    s2.send({
      $case: 'welcome',
      value: {
        routerId: 'scripted',
        sessionId: 's2',
        protocolVersion: 1,
        heartbeatInterval: { seconds: 0, nanos: 100_000_000 },
      },
    });
    expect(await s2.next('credit')).toEqual({ n: 2 });

    // SIGTERM drains: Drain at once, no more credit, the running task reports, and after its
    // Ack the worker closes its side and exits 0.
    s2.send({ $case: 'assign', value: { tasks: [assignment('t4', 1, json({ text: 'gamma' }))] } });
    await s2.next('heartbeats');
    worker.kill('SIGTERM');
    await s2.next('drain');
    const last = await s2.until((seen) => seen.some((m) => m.$case === 'results'), 't4 result');
    expect(last.some((m) => m.$case === 'credit')).toBe(false);
    s2.send({
      $case: 'ack',
      value: { entries: [{ taskId: 't4', attempt: 1, accepted: true, reason: '' }] },
    });
    expect(await s2.fromWorker.take(10_000, 'the worker to close its side')).toBe(END);
    s2.toWorker.push(END);
    expect(await within(worker.exited, 10_000, 'the worker to exit')).toBe(0);
    // Across both streams, the worker never granted more than its slots that had come free.
    expect(creditIn(s1.log.filter((m): m is NonNullable<WorkerMessage> => !!m))).toBe(2 + 3);
  });
});

describe('the Python client against a scripted status service', () => {
  let server: Server | undefined;
  afterEach(async () => {
    await server?.forceShutdown();
  });

  it('resumes a broken WatchTask after the last revision it received, missing and repeating nothing', async () => {
    const requests: WatchTaskRequest[] = [];
    const record = (state: TaskState, revision: number) =>
      Task.fromPartial({
        taskId: 't1',
        pipeline: 'py-demo',
        stage: 'finish',
        state,
        attempt: 1,
        revision,
        output:
          state === TaskState.TASK_STATE_SUCCEEDED
            ? { data: json({ done: true }), contentType: 'application/json' }
            : undefined,
      });
    const transition = (revision: number, from: TaskState, to: TaskState) =>
      Transition.fromPartial({
        revision,
        taskId: 't1',
        fromState: from,
        toState: to,
        stage: 'finish',
        attempt: 1,
        reason: 'TEST',
      });
    const implementation: StatusServiceImplementation = withUnimplemented(StatusServiceDefinition, {
      async *watchTask(request: WatchTaskRequest) {
        requests.push(request);
        if (requests.length === 1) {
          yield { event: { $case: 'snapshot', value: record(TaskState.TASK_STATE_QUEUED, 5) } };
          yield {
            event: {
              $case: 'transition',
              value: transition(6, TaskState.TASK_STATE_QUEUED, TaskState.TASK_STATE_DISPATCHED),
            },
          };
          throw new ServerError(Status.UNAVAILABLE, 'status restarting');
        }
        yield {
          event: {
            $case: 'transition',
            value: transition(7, TaskState.TASK_STATE_DISPATCHED, TaskState.TASK_STATE_RUNNING),
          },
        };
        yield {
          event: {
            $case: 'transition',
            value: transition(8, TaskState.TASK_STATE_RUNNING, TaskState.TASK_STATE_SUCCEEDED),
          },
        };
      },
      getTask: () => Promise.resolve({ task: record(TaskState.TASK_STATE_SUCCEEDED, 8) }),
    });
    server = createServer();
    server.add(StatusServiceDefinition, implementation);
    const port = await server.listen('127.0.0.1:0');
    const { stdout, stderr } = await python([
      'client.py',
      '--status',
      `127.0.0.1:${port}`,
      '--json',
      'watch',
      't1',
    ]);
    expect(requests.map((r) => r.fromRevision)).toEqual([0, 6]);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, { revision?: number } & Record<string, unknown>>);
    expect(lines.map((l) => Object.keys(l)[0])).toEqual([
      'snapshot',
      'transition',
      'transition',
      'transition',
      'final',
    ]);
    expect(lines.slice(1, 4).map((l) => l.transition!.revision)).toEqual([6, 7, 8]);
    expect(lines[4]!.final).toMatchObject({ state: 'SUCCEEDED', output: { done: true } });
    expect(stderr).toMatch(/watch t1: UNAVAILABLE: status restarting; resuming after revision 6/);
  });
});

/** The demo pipeline: TypeScript, then Python, then TypeScript. */
const PY_PIPELINE: Pipeline = Pipeline.fromPartial({
  name: 'py-demo',
  description: 'ingest (TypeScript) → enrich (Python) → finish (TypeScript)',
  stages: ['ingest', 'enrich', 'finish'].map((name, i, all) => ({
    name,
    next: i + 1 < all.length ? [all[i + 1]!] : [],
    runTimeout: { seconds: 30, nanos: 0 },
    heartbeatTimeout: { seconds: 10, nanos: 0 },
    maxAttempts: 5,
    backoff: { initial: { seconds: 0, nanos: 100_000_000 }, multiplier: 2, jitter: 0 },
  })),
});

const expectedOutput = (i: number) => ({
  n: i,
  text: `item-${i}`,
  ingested: 'ts',
  py: true,
  sha256: sha256(`item-${i}`),
  done: true,
});

interface Mesh {
  status: string;
  tracker: string;
  router: string;
  processes: RunningProcess[];
}

async function startMesh(dataDir: string): Promise<Mesh> {
  const processes: RunningProcess[] = [];
  const start = async (args: string[]) => {
    const p = spawnDsat([...args, '--port', '0'], { DSAT_LOG_LEVEL: 'warn' });
    processes.push(p);
    return (await p.waitForLine(/listening on (\S+)/, 30_000))[1]!;
  };
  const status = await start(['status', '--data-dir', dataDir]);
  const tracker = await start(['tracker', '--status-address', status]);
  const router = await start(['router', '--status-address', status, '--tracker-address', tracker]);
  return { status, tracker, router, processes };
}

describe('a Python worker and a Python client in a real mesh', () => {
  const data = tempDir('dsat-py-');
  let mesh: Mesh | undefined;
  const others: RunningProcess[] = [];
  afterAll(() => data.cleanup());
  afterEach(async () => {
    for (const p of [...others, ...(mesh?.processes ?? [])].reverse()) p.kill('SIGKILL');
    await Promise.all([...others, ...(mesh?.processes ?? [])].map((p) => p.exited));
  });

  it('runs 200 tasks through TypeScript → Python → TypeScript stages, and loses none when the Python worker is killed', async () => {
    mesh = await startMesh(path.join(data.path, 'store'));
    const { router, status, tracker } = mesh;
    const channels = [createChannel(tracker), createChannel(router), createChannel(status)];
    const trackerClient = createClient(TrackerServiceDefinition, channels[0]!);
    const routerClient = createClient(RouterServiceDefinition, channels[1]!);
    const statusClient = createClient(StatusServiceDefinition, channels[2]!);
    try {
      await trackerClient.applyPipeline({ pipeline: PY_PIPELINE, validateOnly: false });
      // One TypeScript worker serves the first and the last stage.
      others.push(
        spawnDsat(
          [
            'worker',
            '--port',
            '0',
            '--routers',
            router,
            '--tracker-address',
            tracker,
            '--stages',
            'ingest,finish',
            '--concurrency',
            '16',
            '--handler',
            HANDLERS,
          ],
          { DSAT_LOG_LEVEL: 'warn' },
        ),
      );
      // The Python stage is the slow one (200 ms a task, 8 slots): its queue never runs dry and
      // its slots are busy nearly all the time, so the SIGKILL below always lands mid-attempt.
      const pyWorker = (id: string) =>
        spawnPython('worker.py', [
          '--routers',
          router,
          '--worker-id',
          id,
          '--stages',
          'enrich',
          '--concurrency',
          '8',
          '--delay-ms',
          '200',
        ]);
      const first = pyWorker('py-first');
      others.push(first);
      await waitUntil('a worker on every stage', 30_000, async () => {
        const load = await routerClient.getRouterLoad({});
        return ['ingest', 'enrich', 'finish'].every(
          (s) => (load.stages.find((l) => l.stage === s)?.workers ?? 0) > 0,
        );
      });

      const client = spawnPython('client.py', [
        '--router',
        router,
        '--status',
        status,
        '--json',
        'submit',
        '--pipeline',
        'py-demo',
        '--payload',
        '{"n": {i}, "text": "item-{i}"}',
        '--count',
        '200',
        '--batch-size',
        '50',
        '--wait',
      ]);
      others.push(client);

      // Mid-run, once the first Python worker has had 60 results acknowledged: SIGKILL it, then
      // start another. The router requeues what it held; nothing may be lost or finish twice.
      await waitUntil('60 results acknowledged by the first Python worker', 30_000, () =>
        Promise.resolve(first.stderr.filter((l) => / acked result /.test(l)).length >= 60),
      );
      first.kill('SIGKILL');
      await first.exited;
      const second = pyWorker('py-second');
      others.push(second);

      expect(await within(client.exited, 60_000, 'the client to finish')).toBe(0);
      const results = client.stdout.map(
        (l) => JSON.parse(l) as { index: number; task_id: string; state: string; output: unknown },
      );
      expect(results).toHaveLength(200);
      expect(new Set(results.map((r) => r.task_id)).size).toBe(200);
      for (const r of results) {
        expect(r).toMatchObject({ state: 'SUCCEEDED', output: expectedOutput(r.index) });
      }

      // Checked on the store itself, not on what the client says: one terminal transition per
      // task, and the kill did hit attempts in flight, which were redone by the second worker.
      const stored = await Promise.all(
        results.map(async (r) => ({
          index: r.index,
          task: (await statusClient.getTask({ taskId: r.task_id })).task,
          transitions: (await statusClient.getTaskHistory({ taskId: r.task_id })).transitions,
        })),
      );
      let workerLost = 0;
      const enrichedBy = new Set<string>();
      for (const { index, task, transitions } of stored) {
        expect(task?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
        expect(JSON.parse(Buffer.from(task!.output!.data).toString())).toEqual(
          expectedOutput(index),
        );
        const terminal = transitions.filter((t) => isTerminalState(t.toState));
        expect(terminal.map((t) => t.toState)).toEqual([TaskState.TASK_STATE_SUCCEEDED]);
        workerLost += transitions.filter((t) => t.reason === 'WORKER_LOST').length;
        for (const t of transitions) {
          if (t.stage === 'enrich' && t.toState === TaskState.TASK_STATE_RUNNING) {
            enrichedBy.add(t.workerId);
          }
        }
      }
      expect(workerLost).toBeGreaterThan(0);
      expect(enrichedBy).toEqual(new Set(['py-first', 'py-second']));

      // The client's other paths on the real services: SubmitTask followed live, and ListTasks.
      const meshFlags = ['--router', router, '--status', status, '--json'];
      const followed = await python([
        'client.py',
        ...meshFlags,
        'submit',
        '--pipeline',
        'py-demo',
        '--payload',
        '{"n": 1000, "text": "item-1000"}',
        '--follow',
      ]);
      const events = followed.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, { to?: string } & Record<string, unknown>>);
      expect(events[0]).toMatchObject({ task_id: expect.any(String), duplicate: false });
      expect(events.filter((e) => e.transition).map((e) => e.transition!.to)).toContain(
        'SUCCEEDED',
      );
      expect(events[events.length - 1]!.final).toMatchObject({
        state: 'SUCCEEDED',
        output: expectedOutput(1000),
      });
      const listed = await python([
        'client.py',
        ...meshFlags,
        'list',
        '--pipeline',
        'py-demo',
        '--state',
        'SUCCEEDED',
        '--limit',
        '500',
      ]);
      expect(listed.stdout.trim().split('\n')).toHaveLength(201);
    } finally {
      for (const c of channels) c.close();
    }
  }, 120_000);
});
