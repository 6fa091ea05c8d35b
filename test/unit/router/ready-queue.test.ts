import fc from 'fast-check';
import { ReadyQueue } from '../../../services/router/ready-queue';

interface E {
  id: number;
  priority: number;
  queued: boolean;
}

describe('the ready queue', () => {
  it('gives the highest priority first, then first in, first out', () => {
    const q = new ReadyQueue<E>();
    const e = (id: number, priority: number): E => ({ id, priority, queued: false });
    [e(1, 0), e(2, 5), e(3, 0), e(4, -3), e(5, 5)].forEach((x) => q.push(x));
    const out: number[] = [];
    for (let x = q.shift(); x; x = q.shift()) out.push(x.id);
    expect(out).toEqual([2, 5, 1, 3, 4]);
    expect(q.size).toBe(0);
  });

  it('matches a sorted model under any mix of push, shift and remove', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              op: fc.constant('push' as const),
              priority: fc.integer({ min: -3, max: 3 }),
            }),
            fc.record({ op: fc.constant('shift' as const) }),
            fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }),
          ),
          { maxLength: 200 },
        ),
        (ops) => {
          const q = new ReadyQueue<E>();
          let model: E[] = [];
          let next = 0;
          for (const o of ops) {
            if (o.op === 'push') {
              const x = { id: next++, priority: o.priority, queued: false };
              q.push(x);
              model.push(x);
            } else if (o.op === 'shift') {
              const want = [...model].sort((a, b) => b.priority - a.priority || a.id - b.id)[0];
              const got = q.shift();
              expect(got?.id).toBe(want?.id);
              model = model.filter((x) => x !== want);
            } else if (model.length > 0) {
              const x = model[o.pick % model.length]!;
              expect(q.remove(x)).toBe(true);
              expect(q.remove(x)).toBe(false);
              model = model.filter((y) => y !== x);
            }
            expect(q.size).toBe(model.length);
          }
        },
      ),
    );
  });
});
