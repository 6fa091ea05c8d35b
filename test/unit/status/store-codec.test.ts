import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { TaskState, type Payload, type TaskError } from '../../../gen/dsat/task/v1/task';
import { ByteWriter } from '../../../services/status/byte-codec';
import {
  decodeRecord,
  decodeSegment,
  encodeRecord,
  encodeSegment,
  segmentKey,
  segmentSeekKey,
  type FeedEntry,
} from '../../../services/status/store-codec';
import {
  foldEntry,
  foldEntryInto,
  startTask,
  type LogEntry,
} from '../../../services/status/task-log';

const S = TaskState;
const text = fc.string({ unit: 'binary', maxLength: 12 }); // includes quotes, controls, surrogates
const payload: fc.Arbitrary<Payload | undefined> = fc.option(
  fc.record({
    data: fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
    contentType: text,
  }),
  { nil: undefined },
);
const error: fc.Arbitrary<TaskError | undefined> = fc.option(
  fc.record({
    code: text,
    message: text,
    retryable: fc.boolean(),
    details: fc.dictionary(text, text, { maxKeys: 2 }),
  }),
  { nil: undefined },
);

/** A log of n entries where every entry continues the previous one (seq, from, revision). */
function logOf(n: number): fc.Arbitrary<LogEntry[]> {
  return fc
    .array(
      fc.record({
        to: fc.constantFrom(
          S.TASK_STATE_QUEUED,
          S.TASK_STATE_DISPATCHED,
          S.TASK_STATE_RUNNING,
          S.TASK_STATE_WAITING,
        ),
        stage: fc.constantFrom('s1', 's2', 's3'),
        attempt: fc.integer({ min: 1, max: 5 }),
        workerId: text,
        reason: text,
        transitionId: text,
        error,
        payload,
        input: payload,
        gap: fc.integer({ min: 1, max: 1000 }),
        atMs: fc.integer({ min: 0, max: 2 ** 42 }),
        asyncToken: text,
        branches: fc.option(
          fc.array(
            fc.record({
              branchId: text,
              stage: fc.constantFrom('s2', 's3'),
              state: fc.constant(S.TASK_STATE_QUEUED),
              attempt: fc.constant(1),
            }),
            { minLength: 1, maxLength: 3 },
          ),
          { nil: undefined },
        ),
        progress: fc.option(
          fc.record({
            fraction: fc.double({ min: 0, max: 1, noNaN: true }),
            message: text,
            details: fc.uint8Array({ maxLength: 8 }).map((u) => Buffer.from(u)),
          }),
          { nil: undefined },
        ),
      }),
      { minLength: n, maxLength: n },
    )
    .map((rows) => {
      let revision = 0;
      let from: TaskState = S.TASK_STATE_UNSPECIFIED;
      return rows.map((r, i): LogEntry => {
        revision += r.gap;
        const e: LogEntry = {
          revision,
          seq: i + 1,
          from,
          to: i === 0 ? S.TASK_STATE_SUBMITTED : r.to,
          stage: r.stage,
          attempt: r.attempt,
          workerId: r.workerId,
          reason: r.reason,
          atMs: r.atMs,
          transitionId: r.transitionId,
          error: r.error,
          payload: r.payload,
          input: r.input,
          progress: r.progress,
          asyncToken: r.to === S.TASK_STATE_WAITING ? r.asyncToken : '',
          branches: r.branches,
        };
        from = e.to;
        return e;
      });
    });
}

describe('task records', () => {
  it('round-trips a record and its embedded log, whatever the strings hold', () => {
    fc.assert(
      fc.property(
        logOf(6),
        fc.integer({ min: 0, max: 6 }),
        text,
        text,
        (log, embedded, taskId, traceKey) => {
          const first = log[0] as LogEntry;
          let task = startTask(
            {
              taskId,
              pipeline: 'p',
              pipelineVersion: 2,
              traceparent: '',
              priority: -3,
              idempotencyKey: traceKey,
              parentTaskId: traceKey,
              hops: 4,
            },
            first,
            first.input,
          );
          for (const e of log.slice(1)) task = foldEntry(task, e);
          const back = decodeRecord('u:x', encodeRecord(new ByteWriter(16), task, log, embedded));
          expect(back.task).toEqual({ ...task, updatedAt: new Date((log[5] as LogEntry).atMs) });
          expect(back.log).toEqual(
            log
              .slice(0, embedded)
              .map((e) => ({ ...e, input: undefined, progress: undefined, asyncToken: '' })),
          );
          expect(back.tailFrom).toBe(
            embedded < log.length ? (log[embedded] as LogEntry).revision : 0,
          );
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('feed segments', () => {
  it('round-trips a segment with its revisions and commit time from the key', () => {
    fc.assert(
      fc.property(logOf(4), text, fc.integer({ min: 1, max: 2 ** 40 }), (log, traceId, first) => {
        const entries: FeedEntry[] = log.map((e, i) => ({
          taskId: `task-${i % 2}`,
          pipeline: 'pipe',
          pipelineVersion: 3,
          traceId,
          parentTaskId: i % 2 === 0 ? '' : traceId,
          entry: { ...e, revision: first + i, atMs: 1234, input: undefined },
        }));
        const key = segmentKey(first, first + 3, 1234);
        expect(decodeSegment(key, encodeSegment(new ByteWriter(8), entries))).toEqual(entries);
      }),
      { numRuns: 200 },
    );
  });

  it('orders keys by revision, so a seek finds the segment holding a revision', () => {
    const keys = [
      segmentKey(1, 9, 5),
      segmentKey(10, 10, 1),
      segmentKey(11, 300, 2),
      segmentKey(301, 4000, 3),
    ].sort();
    const holding = (rev: number) => keys.filter((k) => k < segmentSeekKey(rev)).pop();
    expect(holding(1)).toBe(keys[0]);
    expect(holding(9)).toBe(keys[0]);
    expect(holding(10)).toBe(keys[1]);
    expect(holding(299)).toBe(keys[2]);
    expect(holding(301)).toBe(keys[3]);
  });

  it('names the key of a value that does not decode', () => {
    const none: FeedEntry[] = [];
    expect(() => decodeSegment(segmentKey(1, 2, 0), encodeSegment(new ByteWriter(), none))).toThrow(
      /f:0000000000000001.*undecodable feed segment/,
    );
    expect(() => decodeRecord('u:x', Buffer.from('{"nope":1}'))).toThrow(
      /u:x: undecodable task record/,
    );
    expect(() => decodeRecord('u:x', Buffer.from([2, 5, 65]))).toThrow(
      /u:x: undecodable task record/,
    );
  });
});

describe('folding in place', () => {
  it('gives the same task as folding into a copy', () => {
    fc.assert(
      fc.property(logOf(8), (log) => {
        const first = log[0] as LogEntry;
        const start = startTask(
          {
            taskId: 't',
            pipeline: 'p',
            pipelineVersion: 1,
            traceparent: '',
            priority: 0,
            idempotencyKey: '',
            parentTaskId: '',
            hops: 0,
          },
          first,
          first.input,
        );
        let copied = start;
        for (const e of log.slice(1)) copied = foldEntry(copied, e, new Date(e.atMs));
        const inPlace = { ...start };
        for (const e of log.slice(1)) foldEntryInto(inPlace, e, new Date(e.atMs));
        expect(inPlace).toEqual(copied);
      }),
      { numRuns: 300 },
    );
  });
});
