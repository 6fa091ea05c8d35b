/**
 * pipeline3 through real processes (status, router, one worker process per stage) with the
 * pipeline saved straight into the status service, so it runs without a tracker. A closed loop
 * keeps `--window` tasks unfinished; prints one JSON line with tasks/s and CPU ms per task per
 * process (from /proc), and the status store's commit sizes.
 *
 *   npx tsx bench/router-pipeline3.ts [--tasks 20000] [--window 2000] [--concurrency 64] [--sync]
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { SubmitTasksEntry, SubmitTasksRequest } from '../gen/dsat/router/v1/router';
import { AsyncQueue } from '../services/shared/async-queue';
import { ProcessMesh, ResultFeed } from '../test/helpers/process-mesh';
import { PIPELINE3 } from './pipeline3/pipeline';
import { isCorrectResult, makeTasks, type StageDoc } from './pipeline3/workload';
import { procStats } from './proc-stats';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '20000' },
    window: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '64' },
    sync: { type: 'boolean', default: false },
  },
});

async function main() {
  const n = Number(args.tasks);
  const window = Number(args.window);
  const mesh = new ProcessMesh();
  try {
    await mesh.startStatus(args.sync ? [] : ['--no-sync']);
    await mesh.startRouter();
    await mesh.savePipeline(PIPELINE3);
    const handlers = path.join(__dirname, 'pipeline3/handlers.ts');
    await Promise.all(
      ['stage1', 'stage2', 'stage3'].map((s) =>
        mesh.startWorker(handlers, [s], ['--concurrency', String(args.concurrency)]),
      ),
    );
    await mesh.waitForWorkers(['stage1', 'stage2', 'stage3']);
    const feed = new ResultFeed();
    await feed.start(mesh.status, 'pipeline3');
    const tasks = makeTasks(n, `b-${crypto.randomBytes(3).toString('hex')}`);
    const entries: SubmitTasksEntry[] = tasks.map((t) => ({
      clientRef: t.id,
      task: {
        pipeline: 'pipeline3',
        payload: Buffer.from(t.json),
        contentType: 'application/json',
        idempotencyKey: '',
        priority: 0,
        traceparent: '',
      },
    }));
    const names = ['status', 'router', 'stage1', 'stage2', 'stage3'];
    const cpu0 = mesh.procs.map((p) => procStats(p.child.pid!)?.cpuS ?? 0);
    const started = Date.now();
    // One SubmitTasks stream; every task ready in a tick rides in one message.
    const queue = new AsyncQueue<SubmitTasksRequest>();
    const acks = (async () => {
      for await (const res of mesh.router().submitTasks(queue)) void res;
    })();
    let next = 0;
    while (feed.finals.size < n) {
      const room = Math.min(window - (next - feed.finals.size), n - next);
      if (room > 0) {
        queue.push({ entries: entries.slice(next, next + room) });
        next += room;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const seconds = (Date.now() - started) / 1000;
    queue.end();
    await acks;
    const cpu = mesh.procs.map((p, i) => (procStats(p.child.pid!)?.cpuS ?? 0) - cpu0[i]!);
    const byId = new Map(tasks.map((t) => [t.id, t]));
    let bad = 0;
    for (const finals of feed.finals.values()) {
      const f = finals[0]!;
      const doc = f.payload ? (JSON.parse(f.payload.data.toString()) as StageDoc) : undefined;
      const t = doc && byId.get(doc.id);
      if (!t || !isCorrectResult(t, doc)) bad++;
    }
    await feed.stop();
    const st = await mesh.status.getStoreStats({});
    const total = cpu.reduce((a, b) => a + b, 0);
    process.stdout.write(
      JSON.stringify({
        tasks: n,
        window,
        concurrency: Number(args.concurrency),
        sync: args.sync,
        seconds: Number(seconds.toFixed(2)),
        tasks_per_s: Math.round(n / seconds),
        bad,
        cpu_ms_per_task: Number(((total * 1000) / n).toFixed(3)),
        cpu_ms_per_task_by_process: Object.fromEntries(
          names.map((name, i) => [name, Number(((cpu[i]! * 1000) / n).toFixed(3))]),
        ),
        store_transitions_per_commit: Math.round(st.transitions / Math.max(1, st.commits)),
      }) + '\n',
    );
  } finally {
    await mesh.stop();
  }
}

void main();
