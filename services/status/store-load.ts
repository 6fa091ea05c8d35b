import { Pipeline } from '../../gen/dsat/pipeline/v1/pipeline';
import { TaskState, type Task } from '../../gen/dsat/task/v1/task';
import {
  FEED,
  FORMAT,
  HEAD_KEY,
  LIVE,
  PIPELINE,
  SCHEMA_KEY,
  decodeRecord,
  decodeSegment,
  jsonValue,
  parseJson,
  parseSegmentKey,
  prefixEnd,
  type FeedEntry,
} from './store-codec';
import { storeDamaged, writeMarker, type OpenedLevel, type StatusLevel } from './store-open';
import { segmentAtOrBefore } from './store-watch';
import { foldEntry, liveRevOf, type LogEntry, type TaskSlot } from './task-log';
import { isTerminalState, stateName, transitionRule } from './task-state-machine';

/** What the store keeps in memory, read from disk and checked at open. */
export interface LoadedStore {
  readonly revision: number;
  readonly feedStart: number;
  readonly pipelines: readonly Pipeline[];
  /** Live tasks in the order they became live. */
  readonly live: readonly TaskSlot[];
  /** Live tasks whose records were brought up to date from the feed. */
  readonly refolded: number;
  /** With repair: tasks with a gap in their log; their records hold the state before it. */
  readonly damagedTasks: readonly string[];
  /** With repair: everything found lost. Empty otherwise (any loss refuses the open). */
  readonly lost: readonly string[];
}

/** A live task while its log is rebuilt. */
interface Rebuilt {
  task: Task;
  readonly log: LogEntry[];
  readonly embedded: number;
  /** The seq of the record's fold: entries up to it only fill the log, later ones fold. */
  readonly recordSeq: number;
  readonly tailFrom: number;
}

/**
 * Reads the revision counter and checks it against the newest feed segment and the marker file,
 * then rebuilds every live task (its record plus the feed after it), checking that the record is
 * the fold of its log. Any problem refuses the open with STORE_DAMAGED naming the directory and
 * is remembered in the marker; after a repair the problems are reported instead, and the counter
 * is moved past every revision a client may have seen.
 */
export async function loadStore(opened: OpenedLevel): Promise<LoadedStore> {
  const { db, dir, created, repaired, marker } = opened;
  const problems: string[] = [];
  if (created) {
    await db.batch(
      [
        { type: 'put', key: SCHEMA_KEY, value: jsonValue({ format: FORMAT }) },
        { type: 'put', key: HEAD_KEY, value: jsonValue([0, 0]) },
      ],
      { sync: true },
    );
  }
  const schema = await db.get(SCHEMA_KEY);
  if (schema === undefined) {
    problems.push('the dsat schema key is missing (an empty or foreign LevelDB)');
  } else if ((parseJson(SCHEMA_KEY, schema) as { format?: number }).format !== FORMAT) {
    throw storeDamaged(dir, [`unsupported store format ${Buffer.from(schema).toString()}`]);
  }

  const headValue = await db.get(HEAD_KEY);
  const head =
    headValue === undefined ? undefined : (parseJson(HEAD_KEY, headValue) as [number, number]);
  const [newest] = await db.keys({ gte: FEED, lt: prefixEnd(FEED), reverse: true, limit: 1 }).all();
  const [oldest] = await db.keys({ gte: FEED, lt: prefixEnd(FEED), limit: 1 }).all();
  const newestLast = newest === undefined ? 0 : parseSegmentKey(newest).last;
  if (head === undefined) problems.push('the revision counter (m:head) is missing');
  else if (head[1] !== newestLast) {
    problems.push(
      `the revision counter says the newest feed segment ends at ${head[1]}, the newest segment ends at ${newestLast}`,
    );
  }
  let revision = Math.max(head?.[0] ?? 0, newestLast);
  if (marker !== undefined && marker.revision > revision) {
    problems.push(
      `the store was at revision ${marker.revision} when last ${marker.cleanClose ? 'closed' : 'opened'} ` +
        `(${marker.updatedAt}) but holds only revision ${revision}: acknowledged writes are gone`,
    );
    if (repaired) revision = marker.revision;
  }
  const feedStart = oldest === undefined ? revision + 1 : parseSegmentKey(oldest).first;
  if (repaired) problems.push(...(await feedGaps(db)));

  const pipelines: Pipeline[] = [];
  for await (const [key, value] of db.iterator({ gte: PIPELINE, lt: prefixEnd(PIPELINE) })) {
    try {
      pipelines.push(Pipeline.fromJSON(parseJson(key, value)));
    } catch {
      problems.push(`${key}: undecodable pipeline`);
    }
  }

  const slots = new Map<string, Rebuilt>();
  for await (const [key, value] of db.iterator({ gte: LIVE, lt: prefixEnd(LIVE) })) {
    try {
      const r = decodeRecord(key, value);
      slots.set(r.task.taskId, {
        task: r.task,
        log: [...r.log],
        embedded: r.log.length,
        recordSeq: r.task.seq,
        tailFrom: r.tailFrom,
      });
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  const { refolded, damagedTasks, gaps } = await rebuildLogs(db, feedStart, slots);
  problems.push(...gaps);
  for (const s of slots.values()) revision = Math.max(revision, s.task.revision);
  const live = [...slots.values()]
    .map((s): TaskSlot => ({
      task: s.task,
      log: s.log,
      embedded: s.embedded,
      liveRev: liveRevOf(s.log),
    }))
    .sort((a, b) => a.liveRev - b.liveRev);

  if (problems.length > 0 && !repaired) {
    writeMarker(dir, {
      revision: marker?.revision ?? 0,
      cleanClose: false,
      damaged: problems.join('; '),
    });
    throw storeDamaged(dir, problems);
  }
  if (repaired) {
    const fixes = [
      { type: 'put' as const, key: HEAD_KEY, value: jsonValue([revision, newestLast]) },
    ];
    if (schema === undefined)
      fixes.push({ type: 'put', key: SCHEMA_KEY, value: jsonValue({ format: FORMAT }) });
    await db.batch(fixes, { sync: true });
  }
  writeMarker(dir, { revision, cleanClose: false });
  return {
    revision,
    feedStart,
    pipelines,
    live,
    refolded: refolded.size,
    damagedTasks,
    lost: repaired ? [...opened.salvage, ...problems] : [],
  };
}

/**
 * Rebuilds each live task's log from the feed: the entries its record does not embed, up to the
 * record's fold, must continue the embedded ones exactly (seq + 1, ending at the record's
 * revision); entries after the record are folded onto it (legal, not a milestone, which would
 * have put a record). Any gap makes the task damaged.
 */
async function rebuildLogs(
  db: StatusLevel,
  feedStart: number,
  slots: Map<string, Rebuilt>,
): Promise<{ refolded: Set<string>; damagedTasks: string[]; gaps: string[] }> {
  const refolded = new Set<string>();
  const broken = new Set<string>();
  const gaps: string[] = [];
  const fail = (taskId: string, problem: string): void => {
    broken.add(taskId);
    gaps.push(`task ${taskId}: ${problem}`);
  };
  let from = Number.MAX_SAFE_INTEGER;
  for (const [id, s] of slots) {
    // A fully embedded record has no tail older than the feed: the sweep checkpoints first.
    if (s.tailFrom !== 0 && s.tailFrom < feedStart) {
      fail(id, `its transitions from revision ${s.tailFrom} were swept from the feed`);
    }
    const need = s.tailFrom === 0 ? s.task.revision + 1 : s.tailFrom;
    from = Math.min(from, Math.max(need, feedStart));
  }
  if (from === Number.MAX_SAFE_INTEGER) return { refolded, damagedTasks: [...broken], gaps };
  const start = await segmentAtOrBefore(db, from);
  for await (const [key, value] of db.iterator({ gte: start ?? FEED, lt: prefixEnd(FEED) })) {
    let entries: FeedEntry[];
    try {
      entries = decodeSegment(key, value);
    } catch (err) {
      gaps.push(err instanceof Error ? err.message : String(err));
      continue;
    }
    for (const fe of entries) {
      const s = slots.get(fe.taskId);
      const e = fe.entry;
      if (s === undefined || broken.has(fe.taskId) || e.seq <= s.log.length) continue;
      if (e.seq !== s.log.length + 1) {
        fail(
          fe.taskId,
          `transition seq ${e.seq} follows seq ${s.log.length} (transitions are missing)`,
        );
      } else if (e.seq < s.recordSeq) {
        s.log.push(e); // recorded in the fold, not embedded
      } else if (e.seq === s.recordSeq) {
        if (e.revision === s.task.revision) s.log.push(e);
        else
          fail(
            fe.taskId,
            `seq ${e.seq} is revision ${e.revision} in the feed, ${s.task.revision} in the record`,
          );
      } else if (e.from !== s.task.state || transitionRule(e.from, e.to) === undefined) {
        fail(
          fe.taskId,
          `illegal ${stateName(e.from)} → ${stateName(e.to)} from ${stateName(s.task.state)}`,
        );
      } else if (
        e.stage !== s.task.stage ||
        isTerminalState(e.to) ||
        e.from === TaskState.TASK_STATE_DEAD_LETTERED
      ) {
        fail(
          fe.taskId,
          `the milestone at revision ${e.revision} has no record (its put is missing)`,
        );
      } else {
        s.task = foldEntry(s.task, e);
        s.log.push(e);
        refolded.add(fe.taskId);
      }
    }
  }
  for (const [id, s] of slots) {
    if (!broken.has(id) && s.log.length < s.recordSeq) {
      fail(id, `the feed holds ${s.log.length} of the ${s.recordSeq} transitions its record folds`);
    }
  }
  return { refolded, damagedTasks: [...broken], gaps };
}

/** Repair only: every hole in the chain of feed segments (keys only). */
async function feedGaps(db: StatusLevel): Promise<string[]> {
  const gaps: string[] = [];
  let expected = 0;
  for await (const key of db.keys({ gte: FEED, lt: prefixEnd(FEED) })) {
    const { first, last } = parseSegmentKey(key);
    if (expected !== 0 && first !== expected)
      gaps.push(`feed revisions ${expected}..${first - 1} are lost`);
    expected = last + 1;
  }
  return gaps;
}
