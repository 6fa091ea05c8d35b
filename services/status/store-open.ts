import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClassicLevel } from 'classic-level';
import { DsatError } from '../shared/errors';

/*
 * Start-up safety for the status LevelDB: one opener per directory, never a silently empty or
 * silently truncated store, and repair only when asked.
 *
 * LevelDB alone does not refuse a damaged store: a zeroed table file opens fine and fails on the
 * first read, and a corrupt log tail is dropped at open (and the log deleted) with only a line in
 * its LOG file. So after opening we check the table footers and LevelDB's LOG, and a marker file
 * next to the database remembers the last revision we saw and whether damage was found, so a
 * second start does not forget what the first one detected.
 */

export const MARKER_FILE = 'dsat-status.json';

export interface StoreMarker {
  readonly format: 1;
  /** The revision the store held when it was last opened or cleanly closed. */
  readonly revision: number;
  readonly cleanClose: boolean;
  /** Set when damage was detected; cleared only by a repair. */
  readonly damaged?: string;
  readonly updatedAt: string;
}

export type StatusLevel = ClassicLevel<string, Uint8Array>;

export interface OpenedLevel {
  readonly db: StatusLevel;
  /** The directory was empty or missing and a new store was created. */
  readonly created: boolean;
  readonly dir: string;
  readonly repaired: boolean;
  /** What a repair found or set aside: dropped log data, files moved to `lost/`. */
  readonly salvage: readonly string[];
  readonly marker: StoreMarker | undefined;
}

export interface OpenLevelOptions {
  readonly repair: boolean;
  /** How long to retry while another process holds the lock (rolling restarts); 0 = fail fast. */
  readonly lockWaitMs: number;
  /** LevelDB's memtable size: larger means fewer level-0 flushes under load, longer recovery. */
  readonly writeBufferSize: number;
  readonly signal?: AbortSignal | undefined;
}

export function storeDamaged(dir: string, problems: readonly string[], cause?: unknown): DsatError {
  return new DsatError(
    'FAILED_PRECONDITION',
    'STORE_DAMAGED',
    `status store ${dir} is damaged and was not opened: ${problems.join('; ')}. ` +
      'Start it with repair to salvage what is left; the repair reports what was lost.',
    { metadata: { dir }, ...(cause === undefined ? {} : { cause }) },
  );
}

export async function openLevel(dir: string, options: OpenLevelOptions): Promise<OpenedLevel> {
  const dirAbs = path.resolve(dir);
  createDirectory(dirAbs);
  const created = fs.readdirSync(dirAbs).length === 0;
  const marker = readMarker(dirAbs);
  if (marker?.damaged !== undefined && !options.repair) {
    throw storeDamaged(dirAbs, [`damage was found at an earlier start: ${marker.damaged}`]);
  }

  let repaired = false;
  const salvage: string[] = [];
  if (options.repair && !created) {
    // LevelDB's repair takes no lock, so prove nobody holds it first (a small window remains
    // between this probe and the repair; operators repair a stopped service).
    const probe = await openWithLockWait(dirAbs, false, options).catch((err: unknown) => {
      if (err instanceof DsatError && err.reason === 'LEVEL_LOCKED') throw err;
      salvage.push(`the store did not open before repair: ${describe(err)}`);
      return undefined;
    });
    if (probe !== undefined) {
      salvage.push(...checkLevelFiles(probe, dirAbs));
      await probe.close();
    }
    const before = new Set(listLost(dirAbs));
    try {
      await ClassicLevel.repair(dirAbs);
    } catch (err) {
      throw new DsatError('INTERNAL', 'STORE_REPAIR_FAILED', `repair of ${dirAbs} failed`, {
        cause: err,
        metadata: { dir: dirAbs },
      });
    }
    repaired = true;
    for (const f of listLost(dirAbs)) if (!before.has(f)) salvage.push(`repair moved ${f} aside`);
  }

  const db = await openWithLockWait(dirAbs, created, options);
  const problems = checkLevelFiles(db, dirAbs);
  if (problems.length > 0 && !repaired) {
    await db.close().catch(() => undefined);
    writeMarker(dirAbs, {
      revision: marker?.revision ?? 0,
      cleanClose: false,
      damaged: problems.join('; '),
    });
    throw storeDamaged(dirAbs, problems);
  }
  return { db, dir: dirAbs, created, repaired, salvage: [...salvage, ...problems], marker };
}

/**
 * Creates `dir` and its missing parents one level at a time. Node's recursive mkdirSync spins
 * forever, deaf to signals, where the kernel refuses the first missing level with ENOENT (under
 * /proc or /sys); this fails with the path and the reason instead.
 */
function createDirectory(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !fs.existsSync(d); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new DsatError(
        'FAILED_PRECONDITION',
        'DATA_DIR_UNUSABLE',
        `the status store directory ${dir} cannot be created: ${describe(err)}`,
        { cause: err, metadata: { dir } },
      );
    }
  }
}

async function openWithLockWait(
  dir: string,
  created: boolean,
  options: OpenLevelOptions,
): Promise<StatusLevel> {
  const deadline = Date.now() + options.lockWaitMs;
  for (;;) {
    const db: StatusLevel = new ClassicLevel<string, Uint8Array>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      createIfMissing: created,
      writeBufferSize: options.writeBufferSize,
      errorIfExists: false,
    });
    try {
      await db.open();
      return db;
    } catch (err) {
      const code = levelErrorCode(err);
      if (code === 'LEVEL_LOCKED') {
        if (Date.now() < deadline && options.signal?.aborted !== true) {
          await sleep(100, undefined, { signal: options.signal }).catch(() => undefined);
          continue;
        }
        throw levelLocked(dir, err);
      }
      if (code === 'LEVEL_CORRUPTION') throw storeDamaged(dir, [describe(err)], err);
      if (!created && /does not exist/i.test(describe(err))) {
        throw storeDamaged(dir, ['the directory has files but no LevelDB CURRENT file'], err);
      }
      throw new DsatError(
        'UNAVAILABLE',
        'STORE_OPEN_FAILED',
        `cannot open status store ${dir}: ${describe(err)}`,
        {
          cause: err,
          metadata: { dir },
        },
      );
    }
  }
}

function levelLocked(dir: string, cause: unknown): DsatError {
  return new DsatError(
    'UNAVAILABLE',
    'LEVEL_LOCKED',
    `status store ${dir} is locked by another process (LEVEL_LOCKED): ${describe(cause)}`,
    { cause, metadata: { dir } },
  );
}

/**
 * classic-level reports `LEVEL_DATABASE_NOT_OPEN` with the real code on `cause`. Duck-typed, not
 * `instanceof Error`: errors made by the native binding may come from another realm (jest's vm).
 */
export function levelErrorCode(err: unknown): string | undefined {
  for (const e of causes(err)) {
    if (e.code === 'LEVEL_LOCKED' || e.code === 'LEVEL_CORRUPTION') return e.code;
  }
  return undefined;
}

function describe(err: unknown): string {
  const parts = causes(err).map((e) => e.message);
  return parts.length === 0 ? String(err) : parts.join(': ');
}

function causes(err: unknown): { code?: unknown; message: string }[] {
  const out: { code?: unknown; message: string }[] = [];
  for (let e: unknown = err; typeof e === 'object' && e !== null && out.length < 4;) {
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    out.push({ code, message: String(message) });
    e = cause;
  }
  return out;
}

const TABLE_MAGIC = Buffer.from([0x57, 0xfb, 0x80, 0x8b, 0x24, 0x75, 0x47, 0xdb]);

/** Damage LevelDB opened over: dropped log records (in its LOG) and table files without footer. */
export function checkLevelFiles(db: StatusLevel, dir: string): string[] {
  const problems: string[] = [];
  const log = readText(path.join(dir, 'LOG'));
  const dropped = log
    .split('\n')
    .filter((line) => /dropping|corruption|ignoring error/i.test(line))
    .map((line) => line.replace(/^\S+ \S+ /, '').trim());
  // A log damaged all along its length reports every block: one line each would bury the message.
  if (dropped.length > 3) {
    const bytes = dropped.reduce((n, l) => n + Number(/dropping (\d+) bytes/.exec(l)?.[1] ?? 0), 0);
    problems.push(
      `LevelDB dropped data ${dropped.length} times while opening (${bytes} bytes in all); ` +
        `the first: ${dropped[0]}; the last: ${dropped[dropped.length - 1]}`,
    );
  } else {
    for (const line of dropped) problems.push(`LevelDB dropped data while opening: ${line}`);
  }
  const found = new Map<string, string>();
  for (const [number, size] of listedTables(db)) {
    const problem = checkTable(dir, number, size);
    if (problem !== undefined) found.set(number, problem);
  }
  if (found.size > 0) {
    // A compaction started by the open may have replaced a table since it was listed.
    const live = listedTables(db);
    for (const [number, problem] of found) if (live.has(number)) problems.push(problem);
  }
  return problems;
}

/** Table files of the open version, by number, with the sizes the manifest gives. */
function listedTables(db: StatusLevel): Map<string, number> {
  const tables = new Map<string, number>();
  for (const m of db.getProperty('leveldb.sstables').matchAll(/^\s*(\d+):(\d+)\[/gm)) {
    tables.set((m[1] ?? '').padStart(6, '0'), Number(m[2]));
  }
  return tables;
}

function checkTable(dir: string, number: string, size: number): string | undefined {
  // Opened once, sized with fstat: a table a compaction deletes cannot vanish between the two.
  for (const name of [`${number}.ldb`, `${number}.sst`]) {
    let fd: number;
    try {
      fd = fs.openSync(path.join(dir, name), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const tail = Buffer.alloc(8);
    let actual: number;
    try {
      actual = fs.fstatSync(fd).size;
      fs.readSync(fd, tail, 0, 8, Math.max(0, actual - 8));
    } finally {
      fs.closeSync(fd);
    }
    if (actual !== size) return `table file ${name} has ${actual} bytes, the manifest says ${size}`;
    if (!tail.equals(TABLE_MAGIC)) return `table file ${name} has no valid footer`;
    return undefined;
  }
  return `table file ${number}.ldb is missing`;
}

export function readMarker(dir: string): StoreMarker | undefined {
  const text = readText(path.join(dir, MARKER_FILE));
  if (text === '') return undefined;
  try {
    const m = JSON.parse(text) as StoreMarker;
    if (m.format === 1 && typeof m.revision === 'number') return m;
  } catch {
    // an unreadable marker is reported below like a wrong one
  }
  throw storeDamaged(dir, [`${MARKER_FILE} is unreadable`]);
}

/** Written atomically: temp file, fsync, rename, fsync the directory. */
export function writeMarker(dir: string, fields: Omit<StoreMarker, 'format' | 'updatedAt'>): void {
  const marker: StoreMarker = { format: 1, ...fields, updatedAt: new Date().toISOString() };
  const file = path.join(dir, MARKER_FILE);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(marker));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

function listLost(dir: string): string[] {
  try {
    return fs.readdirSync(path.join(dir, 'lost')).map((f) => `lost/${f}`);
  } catch {
    return [];
  }
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
