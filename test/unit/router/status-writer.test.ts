import { EventEmitter } from 'node:events';
import type {
  ApplyTransitionsRequest,
  ApplyTransitionsResponse,
  TransitionOutcome,
} from '../../../gen/dsat/status/v1/status';
import { TaskState } from '../../../gen/dsat/task/v1/task';
import type { ApplyStream } from '../../../services/router/status-writer';
import { createStatusWriter } from '../../../services/router/status-writer';
import { transitionWrite } from '../../../services/router/transition-write';
import { createLogger } from '../../../services/shared/logger';

class FakeStream extends EventEmitter {
  readonly sent: ApplyTransitionsRequest[] = [];
  write(m: ApplyTransitionsRequest) {
    this.sent.push(m);
    return true;
  }
  cancel() {}
  answer(i: number) {
    const outcomes: TransitionOutcome[] = this.sent[i]!.writes.map((w) => ({
      transitionId: w.transitionId,
      taskId: w.taskId,
      code: 0,
      reason: '',
      message: '',
      revision: 1,
      seq: 1,
      duplicate: false,
    }));
    this.emit('data', { outcomes } satisfies ApplyTransitionsResponse);
  }
}

const w = (id: string) =>
  transitionWrite(id, 'task', TaskState.TASK_STATE_QUEUED, 1, TaskState.TASK_STATE_DISPATCHED, 1);
const tick = () => new Promise((r) => setImmediate(r));

/** A writer over fake streams; `streams` holds each one it opened, in order. */
function writerOverFakes(window?: number, maxMessageBytes?: number) {
  const streams: FakeStream[] = [];
  const writer = createStatusWriter({
    connect: () => {
      const s = new FakeStream();
      streams.push(s);
      return s as unknown as ApplyStream;
    },
    logger: createLogger('t', 'silent'),
    ...(window === undefined ? {} : { window }),
    ...(maxMessageBytes === undefined ? {} : { maxMessageBytes }),
  });
  return { writer, streams };
}

describe('the status write stream', () => {
  it('sends every write of a tick in one message; while one is in flight, the next waits for its answer unless it is full; keeps order', async () => {
    // Two writes without payload fill a message.
    const { writer, streams } = writerOverFakes(2, 2 * 160);
    const done: string[] = [];
    const cb = (o: TransitionOutcome) => done.push(o.transitionId);
    const batches = () => streams[0]!.sent.map((m) => m.writes.map((x) => x.transitionId));
    writer.write(w('a'), cb);
    await tick();
    writer.write(w('b'), cb);
    await tick();
    // `a` is in flight: `b` alone waits for its answer.
    expect(batches()).toEqual([['a']]);
    writer.write(w('c'), cb);
    await tick();
    // `b` and `c` fill a message, which goes at once: window 2.
    expect(batches()).toEqual([['a'], ['b', 'c']]);
    writer.write(w('d'), cb);
    writer.write(w('e'), cb);
    writer.write(w('f'), cb);
    await tick();
    expect(batches()).toHaveLength(2);
    streams[0]!.answer(0);
    expect(done).toEqual(['a']);
    // A full message goes in the freed slot; `f` waits for an answer.
    expect(batches()).toEqual([['a'], ['b', 'c'], ['d', 'e']]);
    streams[0]!.answer(1);
    streams[0]!.answer(2);
    expect(batches()).toEqual([['a'], ['b', 'c'], ['d', 'e'], ['f']]);
    streams[0]!.answer(3);
    expect(done).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(writer.pending).toBe(0);
    expect(writer.pendingBytes).toBe(0);
  });

  it('re-sends unanswered writes on a new stream, in their order, after the old one broke', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate'] });
    try {
      const { writer, streams } = writerOverFakes(4);
      const done: string[] = [];
      for (const id of ['a', 'b'])
        writer.write(w(id), (o: TransitionOutcome) => done.push(o.transitionId));
      await tick();
      writer.write(w('c'), (o: TransitionOutcome) => done.push(o.transitionId));
      await tick();
      streams[0]!.answer(0);
      streams[0]!.emit('error', new Error('reset'));
      writer.write(w('d'), (o: TransitionOutcome) => done.push(o.transitionId));
      jest.advanceTimersByTime(200);
      await tick();
      const again = streams[1]!;
      expect(again.sent.flatMap((m) => m.writes.map((x) => x.transitionId))).toEqual(['c', 'd']);
      again.answer(0);
      if (again.sent[1]) again.answer(1);
      expect(done).toEqual(['a', 'b', 'c', 'd']);
      await writer.close(0);
    } finally {
      jest.useRealTimers();
    }
  });

  it('withdraws a write whose caller gave up before it was first sent, never one already sent', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'queueMicrotask'] });
    try {
      const { writer, streams } = writerOverFakes();
      const outcomes = new Map<string, TransitionOutcome>();
      const cb = (o: TransitionOutcome) => outcomes.set(o.transitionId, o);
      const callers = new Map(
        ['sent', 'queued', 'kept', 'late'].map((k) => [k, new AbortController()]),
      );
      const signal = (k: string) => callers.get(k)!.signal;
      writer.write(w('sent'), cb, undefined, signal('sent'));
      await tick();
      // The stream breaks: `sent` goes back to the queue, to be re-sent; new writes wait with it.
      streams[0]!.emit('error', new Error('reset'));
      writer.write(w('queued'), cb, undefined, signal('queued'));
      writer.write(w('kept'), cb, undefined, signal('kept'));
      writer.write(w('late'), cb, undefined, signal('late'));
      writer.write(w('plain'), cb);
      expect(writer.pending).toBe(5);
      for (const k of ['sent', 'queued']) callers.get(k)!.abort();
      // Withdrawn at once when asked (a full backlog asks), without waiting for the stream.
      expect(writer.withdrawAbandoned()).toBe(1);
      expect(outcomes.get('queued')).toMatchObject({ code: 1, reason: 'CALLER_GONE' });
      expect(writer.pending).toBe(4);
      callers.get('late')!.abort();
      jest.advanceTimersByTime(200);
      await tick();
      const again = streams[1]!;
      // Or when its turn to be sent comes.
      expect(again.sent.flatMap((m) => m.writes.map((x) => x.transitionId))).toEqual([
        'sent',
        'kept',
        'plain',
      ]);
      expect(outcomes.get('late')).toMatchObject({ code: 1, reason: 'CALLER_GONE' });
      again.answer(0);
      expect(outcomes.get('sent')).toMatchObject({ code: 0 });
      expect(writer.pending).toBe(0);
      expect(writer.pendingBytes).toBe(0);
      await writer.close(0);
    } finally {
      jest.useRealTimers();
    }
  });

  it('counts the bytes waiting, queued, in flight or re-sent after a break, until answered', async () => {
    const { writer, streams } = writerOverFakes();
    const withPayload = (id: string, bytes: number) => ({
      ...w(id),
      payload: { data: Buffer.alloc(bytes), contentType: 'text/plain' },
    });
    writer.write(withPayload('a', 1_000));
    writer.write(withPayload('b', 2_000));
    expect(writer.pendingBytes).toBeGreaterThan(3_000);
    await tick();
    const inFlight = writer.pendingBytes;
    expect(inFlight).toBeGreaterThan(3_000);
    streams[0]!.emit('error', new Error('broken'));
    expect(writer.pendingBytes).toBe(inFlight);
    await new Promise((r) => setTimeout(r, 150)); // the first reconnect waits 100 ms
    expect(streams).toHaveLength(2);
    streams[1]!.answer(0);
    expect(writer.pendingBytes).toBe(0);
    await writer.close(0);
  });

  it('gives up what is left at close with UNAVAILABLE, so nobody waits forever', async () => {
    const writer = createStatusWriter({
      connect: () => new FakeStream() as unknown as ApplyStream,
      logger: createLogger('t', 'silent'),
    });
    const outcome = writer.commit([w('x')]);
    await tick();
    await writer.close(10);
    expect((await outcome)[0]).toMatchObject({ code: 14, reason: 'ROUTER_SHUTTING_DOWN' });
  });

  it('matches an answer to its message by position, and by transition id when the order differs', async () => {
    const stream = new FakeStream();
    const writer = createStatusWriter({
      connect: () => stream as unknown as ApplyStream,
      logger: createLogger('t', 'silent'),
    });
    const seen: [string, number][] = [];
    const cb = (o: TransitionOutcome, id: string) => seen.push([id, o.revision]);
    for (const id of ['a', 'b', 'c']) writer.write(w(id), cb, id);
    await tick();
    const outcome = (id: string, revision: number): TransitionOutcome => ({
      transitionId: id,
      taskId: 'task',
      code: 0,
      reason: '',
      message: '',
      revision,
      seq: 1,
      duplicate: false,
    });
    stream.emit('data', { outcomes: [outcome('c', 3), outcome('a', 1), outcome('b', 2)] });
    expect(seen).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    expect(writer.pending).toBe(0);
    await writer.close(0);
  });

  it('asks for positional outcomes and names each unnamed OK one after the write at its position; an incomplete answer is not guessed', async () => {
    const stream = new FakeStream();
    const writer = createStatusWriter({
      connect: () => stream as unknown as ApplyStream,
      logger: createLogger('t', 'silent'),
    });
    const seen: [string, string, number, string][] = [];
    const cb = (o: TransitionOutcome, id: string) =>
      seen.push([id, o.transitionId, o.code, o.taskId]);
    const write = (id: string) =>
      transitionWrite(
        id,
        `task-${id}`,
        TaskState.TASK_STATE_QUEUED,
        1,
        TaskState.TASK_STATE_DISPATCHED,
        1,
      );
    for (const id of ['a', 'b', 'c']) writer.write(write(id), cb, id);
    await tick();
    expect(stream.sent[0]!.positionalOutcomes).toBe(true);
    const unnamed = (seq: number): TransitionOutcome => ({
      transitionId: '',
      taskId: '',
      code: 0,
      reason: '',
      message: '',
      revision: 7,
      seq,
      duplicate: false,
    });
    const refused: TransitionOutcome = {
      ...unnamed(1),
      transitionId: 'b',
      taskId: 'task-b',
      code: 9,
      reason: 'STATE_MISMATCH',
    };
    stream.emit('data', { outcomes: [unnamed(1), refused, unnamed(3)] });
    expect(seen).toEqual([
      ['a', 'a', 0, 'task-a'],
      ['b', 'b', 9, 'task-b'],
      ['c', 'c', 0, 'task-c'],
    ]);
    // Two writes answered by one unnamed outcome: neither can be told apart, both are given up.
    seen.length = 0;
    for (const id of ['d', 'e']) writer.write(write(id), cb, id);
    await tick();
    stream.emit('data', { outcomes: [unnamed(1)] });
    expect(seen.map(([id, , code]) => [id, code])).toEqual([
      ['d', 14],
      ['e', 14],
    ]);
    await writer.close(0);
  });
});
