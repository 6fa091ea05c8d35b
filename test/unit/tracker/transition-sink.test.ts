import type { TransitionOutcome, TransitionWrite } from '../../../gen/dsat/status/v1/status';
import { createBatchingSink } from '../../../services/tracker/transition-sink';

const w = (id: string) => ({ transitionId: id }) as TransitionWrite;
const ok = (write: TransitionWrite): TransitionOutcome => ({
  transitionId: write.transitionId,
  taskId: '',
  code: 0,
  reason: '',
  message: '',
  revision: 0,
  seq: 0,
  duplicate: false,
});

describe('the batching transition sink', () => {
  it('puts every commit asked for in one turn into one store call, each group answered in order', async () => {
    const calls: string[][] = [];
    const sink = createBatchingSink(async (writes) => {
      calls.push(writes.map((x) => x.transitionId));
      return writes.map(ok);
    });
    const a = sink.commit([w('a1'), w('a2')]);
    const b = sink.commit([w('b1')]);
    expect((await a).map((o) => o.transitionId)).toEqual(['a1', 'a2']);
    expect((await b).map((o) => o.transitionId)).toEqual(['b1']);
    expect(calls).toEqual([['a1', 'a2', 'b1']]);
  });

  it('queues commits while a call is in flight, never splits a group, and caps a call', async () => {
    const calls: string[][] = [];
    let release: () => void = () => undefined;
    const sink = createBatchingSink(
      async (writes) => {
        calls.push(writes.map((x) => x.transitionId));
        if (calls.length === 1) await new Promise<void>((r) => (release = r));
        return writes.map(ok);
      },
      { maxBatch: 3 },
    );
    const first = sink.commit([w('x')]);
    await Promise.resolve();
    await Promise.resolve();
    const later = [
      sink.commit([w('p1'), w('p2')]),
      sink.commit([w('q1'), w('q2')]),
      sink.commit([w('r')]),
    ];
    release();
    await first;
    await Promise.all(later);
    expect(calls).toEqual([['x'], ['p1', 'p2'], ['q1', 'q2', 'r']]);
  });

  it('rejects the groups of a failed call and keeps going with the next', async () => {
    let fail = true;
    const sink = createBatchingSink(async (writes) => {
      if (fail) {
        fail = false;
        throw new Error('unreachable');
      }
      return writes.map(ok);
    });
    await expect(sink.commit([w('a')])).rejects.toThrow('unreachable');
    await expect(sink.commit([w('b')])).resolves.toHaveLength(1);
    await sink.drain();
  });

  it('refuses an answer with the wrong number of outcomes', async () => {
    const sink = createBatchingSink(async () => []);
    await expect(sink.commit([w('a')])).rejects.toThrow('0 outcomes for 1 writes');
  });
});
