import { BinaryReader } from '@bufbuild/protobuf/wire';
import type { WatchEventsResponse } from '../../gen/dsat/status/v1/status';
import {
  StatusServiceDefinition,
  WatchEventsResponse as FullWatchEventsResponse,
} from '../../gen/dsat/status/v1/status';
import type { Transition } from '../../gen/dsat/task/v1/task';
import { TaskError } from '../../gen/dsat/task/v1/task';
import { protoFieldName } from '../shared/field-names';
import { LeanBinaryReader, readUint64Number } from '../shared/lean-wire';

/**
 * The status feed as the tracker's timers read it. They use a transition's revision, task id,
 * states, stage, attempt, pipeline and error (timers.ts, applyOne). The feed brings the tracker
 * every transition of the mesh, so it asks for only these (TIMER_FIELD_MASK, the watch's
 * transition_mask) and decodes only these: a status service that sends more (one from before the
 * mask) has its time, sequence, worker, reason, trace id, transition id, parent and payload
 * skipped undecoded and left at their defaults. Encoding and decoding those fields (a Timestamp and
 * a Date each, two 64-bit numbers through strings, five strings) was most of the tracker's CPU
 * besides GC, and a good part of the status service's work on the feed.
 */
export const TIMER_FIELDS = [
  'revision',
  'taskId',
  'fromState',
  'toState',
  'stage',
  'attempt',
  'pipeline',
  'error',
] as const satisfies readonly (keyof Transition)[];

/** TIMER_FIELDS by their proto names, as the watch's transition_mask names them. */
export const TIMER_FIELD_MASK: readonly string[] = TIMER_FIELDS.map(protoFieldName);

/** A transition as the timers may read it: a field they start to read must be decoded first. */
export type TimerTransition = Pick<Transition, (typeof TIMER_FIELDS)[number]>;

/**
 * Past a field this decoder does not read: false at the end of a group (or a zero tag), where the
 * message ends, as the generated decoders do.
 */
function skipField(reader: BinaryReader, tag: number): boolean {
  if ((tag & 7) === 4 || tag === 0) return false;
  reader.skip(tag & 7, tag >>> 3);
  return true;
}

/**
 * A Transition at its defaults, as one literal: `Transition.fromPartial({})` makes two objects (its
 * base and the copy), a quarter of what the tracker allocated in a T run.
 */
function blankTransition(): Transition {
  return {
    revision: 0,
    taskId: '',
    seq: 0,
    fromState: 0,
    toState: 0,
    stage: '',
    attempt: 0,
    workerId: '',
    reason: '',
    at: undefined,
    pipeline: '',
    traceId: '',
    error: undefined,
    payload: undefined,
    transitionId: '',
    parentTaskId: '',
  };
}

function decodeTransition(reader: BinaryReader, end: number): Transition {
  const t = blankTransition();
  while (reader.pos < end) {
    const tag = reader.uint32();
    switch (tag) {
      case 8: // 1 revision
        t.revision = readUint64Number(reader);
        continue;
      case 18: // 2 task_id
        t.taskId = reader.string();
        continue;
      case 32: // 4 from_state
        t.fromState = reader.int32();
        continue;
      case 40: // 5 to_state
        t.toState = reader.int32();
        continue;
      case 50: // 6 stage
        t.stage = reader.string();
        continue;
      case 56: // 7 attempt
        t.attempt = reader.uint32();
        continue;
      case 90: // 11 pipeline
        t.pipeline = reader.string();
        continue;
      case 106: // 13 error
        t.error = TaskError.decode(reader, reader.uint32());
        continue;
    }
    if (!skipField(reader, tag)) break;
  }
  return t;
}

function decode(input: BinaryReader | Uint8Array, length?: number): WatchEventsResponse {
  const reader = input instanceof BinaryReader ? input : new LeanBinaryReader(input);
  const end = length === undefined ? reader.len : reader.pos + length;
  const message: WatchEventsResponse = { transitions: [], revision: 0 };
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (tag === 10) {
      const size = reader.uint32();
      message.transitions.push(decodeTransition(reader, reader.pos + size));
      continue;
    }
    if (tag === 16) {
      message.revision = readUint64Number(reader);
      continue;
    }
    if (!skipField(reader, tag)) break;
  }
  return message;
}

/** WatchEventsResponse decoding only TIMER_FIELDS of each transition. */
export const TimerFeedResponse: typeof FullWatchEventsResponse = {
  ...FullWatchEventsResponse,
  decode,
};

/** The status service as the tracker calls it: its feed decoded for the timers alone. */
export const TrackerStatusDefinition = {
  ...StatusServiceDefinition,
  methods: {
    ...StatusServiceDefinition.methods,
    watchEvents: {
      ...StatusServiceDefinition.methods.watchEvents,
      responseType: TimerFeedResponse,
    },
  },
} as const;
