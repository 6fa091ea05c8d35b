import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from '@jest/globals';
import { ClassicLevel } from 'classic-level';
import { DsatError } from '../../../services/shared/errors';
import {
  MARKER_FILE,
  checkLevelFiles,
  type StatusLevel,
} from '../../../services/status/store-open';
import { openStatusStore } from '../../../services/status/status-store';
import { S, cleanDirs, closeStores, createTask, move, open, tempDir } from './store-harness';

afterEach(async () => {
  await closeStores();
  cleanDirs();
});

/** A store with data in a table file (.ldb), closed cleanly. */
async function storeWithTables(): Promise<string> {
  const dir = tempDir();
  let store = await open({ dir });
  for (let i = 0; i < 50; i++) await createTask(store, `a${i}`);
  await store.close();
  store = await open({ dir }); // LevelDB turns the recovered log into a table at open
  for (let i = 0; i < 5; i++) await move(store, `a${i}`, S.TASK_STATE_CANCELLED);
  await store.close();
  expect(fs.readdirSync(dir).some((f) => f.endsWith('.ldb'))).toBe(true);
  return dir;
}

async function openError(options: Parameters<typeof openStatusStore>[0]): Promise<DsatError> {
  try {
    const store = await openStatusStore({ sweepIntervalMs: 0, ...options });
    await store.close();
  } catch (err) {
    expect(err).toBeInstanceOf(DsatError);
    return err as DsatError;
  }
  throw new Error('the store opened');
}

describe('opening the store', () => {
  it('creates a store only in an empty or missing directory', async () => {
    const dir = path.join(tempDir(), 'nested', 'status');
    const store = await open({ dir });
    expect(store.openReport).toMatchObject({ created: true, revision: 0 });
    await store.close();
    const again = await open({ dir });
    expect(again.openReport.created).toBe(false);
  });

  it('fails with DATA_DIR_UNUSABLE naming a directory the kernel will not create', async () => {
    // Node's recursive mkdir never returns here (ENOENT from /proc for the first missing level).
    const dir = '/proc/dsat-store/status';
    const err = await openError({ dir });
    expect(err).toMatchObject({ kind: 'FAILED_PRECONDITION', reason: 'DATA_DIR_UNUSABLE' });
    expect(err.message).toContain(dir);
    expect(err.message).toContain('ENOENT');
  });

  it('fails fast with LEVEL_LOCKED naming the directory when the store is open', async () => {
    const first = await open();
    await createTask(first, 'a');
    const err = await openError({ dir: first.dir });
    expect(err).toMatchObject({ kind: 'UNAVAILABLE', reason: 'LEVEL_LOCKED' });
    expect(err.message).toContain('LEVEL_LOCKED');
    expect(err.message).toContain(first.dir);
    // The first store is unaffected.
    await move(first, 'a', S.TASK_STATE_DISPATCHED);
    expect((await first.getTask('a')).state).toBe(S.TASK_STATE_DISPATCHED);
  });

  it('waits for the lock when asked, as a rolling restart does', async () => {
    const first = await open();
    await createTask(first, 'a');
    const closing = new Promise<void>((resolve) => setTimeout(() => resolve(first.close()), 300));
    const second = await open({ dir: first.dir, lockWaitMs: 5000 });
    await closing;
    expect((await second.getTask('a')).state).toBe(S.TASK_STATE_QUEUED);
  });

  it('refuses a directory with files but no LevelDB, never starting empty', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a database');
    const err = await openError({ dir });
    expect(err).toMatchObject({ reason: 'STORE_DAMAGED' });
    expect(err.message).toContain(dir);
    expect(err.message).toContain('CURRENT');
  });

  it('refuses a damaged CURRENT file', async () => {
    const dir = await storeWithTables();
    fs.writeFileSync(path.join(dir, 'CURRENT'), 'garbage');
    const err = await openError({ dir });
    expect(err).toMatchObject({ kind: 'FAILED_PRECONDITION', reason: 'STORE_DAMAGED' });
    expect(err.message).toContain(dir);
    expect(err.message).toMatch(/repair/);
  });

  it('refuses a zeroed table file, and repairs it only when asked, reporting the loss', async () => {
    const dir = await storeWithTables();
    const table = fs.readdirSync(dir).find((f) => f.endsWith('.ldb')) as string;
    fs.writeFileSync(path.join(dir, table), Buffer.alloc(fs.statSync(path.join(dir, table)).size));
    const err = await openError({ dir });
    expect(err.reason).toBe('STORE_DAMAGED');
    expect(err.message).toContain(table);
    // Refused again on the next start: the damage is remembered.
    expect((await openError({ dir })).reason).toBe('STORE_DAMAGED');
    const repaired = await open({ dir, repair: true });
    expect(repaired.openReport.repaired).toBe(true);
    expect(repaired.openReport.lost.join('\n')).toContain(table);
    await repaired.close();
    const after = await open({ dir });
    expect(after.openReport.repaired).toBe(false);
  });

  it('finds no damage while compactions replace table files under the check', async () => {
    // After a crash the open starts compactions that delete the tables they merge; a table
    // listed a moment ago and gone now is not damage (a T03 restart once failed on it).
    const dir = tempDir();
    const db: StatusLevel = new ClassicLevel<string, Uint8Array>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      writeBufferSize: 16 * 1024,
    });
    await db.open();
    try {
      const value = new Uint8Array(512).fill(7);
      let writing = true;
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await db.batch(
            Array.from({ length: 64 }, (_, j) => ({
              type: 'put' as const,
              key: `k${(i * 64 + j) % 20000}`,
              value,
            })),
          );
        }
      })();
      const problems: string[] = [];
      const until = Date.now() + 3000;
      let checks = 0;
      while (Date.now() < until) {
        problems.push(...checkLevelFiles(db, dir));
        checks++;
        await new Promise((resolve) => setImmediate(resolve));
      }
      writing = false;
      await writer;
      expect(problems).toEqual([]);
      expect(checks).toBeGreaterThan(10);
      // Compactions did run: table numbers moved on.
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.ldb')).length).toBeGreaterThan(0);
    } finally {
      await db.close();
    }
  });

  it('refuses a store whose newest log lost acknowledged writes after a clean close', async () => {
    const dir = await storeWithTables();
    const log = fs.readdirSync(dir).find((f) => f.endsWith('.log')) as string;
    expect(fs.statSync(path.join(dir, log)).size).toBeGreaterThan(0);
    fs.truncateSync(path.join(dir, log), 0);
    const err = await openError({ dir });
    expect(err.reason).toBe('STORE_DAMAGED');
    expect(err.message).toMatch(/acknowledged writes are gone/);
    const repaired = await open({ dir, repair: true });
    expect(repaired.openReport.lost.join('\n')).toMatch(/acknowledged writes are gone/);
    // Revisions clients may have seen are never handed out again.
    const marker = JSON.parse(fs.readFileSync(path.join(dir, MARKER_FILE), 'utf8')) as {
      revision: number;
    };
    expect(repaired.stats().revision).toBeGreaterThanOrEqual(marker.revision);
  });

  it('refuses a log whose records LevelDB had to drop', async () => {
    const dir = tempDir();
    const store = await open({ dir });
    for (let i = 0; i < 30; i++) await createTask(store, `a${i}`);
    await (Reflect.get(store, 'db') as { close(): Promise<void> }).close(); // no clean close
    const log = fs.readdirSync(dir).find((f) => f.endsWith('.log')) as string;
    const fd = fs.openSync(path.join(dir, log), 'r+');
    fs.writeSync(fd, Buffer.alloc(200, 0x55), 0, 200, 1000);
    fs.closeSync(fd);
    const err = await openError({ dir });
    expect(err.reason).toBe('STORE_DAMAGED');
    expect(err.message).toMatch(/dropped data|dropping/);
    // LevelDB deleted the damaged log at that open; the refusal still stands.
    const again = await openError({ dir });
    expect(again.message).toMatch(/earlier start/);
  });

  it('sums up a log damaged in many blocks in one short message', async () => {
    const dir = tempDir();
    const store = await open({ dir });
    // Tasks with 8 kB inputs: the log spans a few hundred 32 kB blocks.
    const input = { data: Buffer.alloc(8_000, 7), contentType: 'application/octet-stream' };
    for (let i = 0; i < 600; i++) await createTask(store, `a${i}`, { payload: input });
    await (Reflect.get(store, 'db') as { close(): Promise<void> }).close(); // no clean close
    const log = fs.readdirSync(dir).find((f) => f.endsWith('.log')) as string;
    const fd = fs.openSync(path.join(dir, log), 'r+');
    for (let block = 1; block <= 40; block++) {
      fs.writeSync(fd, Buffer.alloc(100, 0x55), 0, 100, block * 32_768 + 500);
    }
    fs.closeSync(fd);
    const err = await openError({ dir });
    expect(err.reason).toBe('STORE_DAMAGED');
    expect(err.message).toMatch(
      /LevelDB dropped data \d+ times while opening \(\d+ bytes in all\)/,
    );
    expect(err.message.length).toBeLessThan(1_000);
  });

  it('refuses a store whose revision counter disagrees with its newest feed segment', async () => {
    const dir = tempDir();
    const store = await open({ dir });
    await createTask(store, 'a');
    await createTask(store, 'b');
    await store.close();
    const raw = new ClassicLevel<string, string>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'utf8',
    });
    await raw.open();
    const [newest] = await raw.keys({ gte: 'f:', lt: 'f;', reverse: true, limit: 1 }).all();
    await raw.del(newest as string);
    await raw.close();
    const err = await openError({ dir });
    expect(err.message).toMatch(/revision counter/);
  });

  it('refuses a live task whose transitions are missing from the feed', async () => {
    const dir = tempDir();
    const store = await open({ dir });
    await createTask(store, 'a');
    await move(store, 'a', S.TASK_STATE_DISPATCHED);
    await createTask(store, 'b');
    await move(store, 'a', S.TASK_STATE_RUNNING);
    await store.close();
    const raw = new ClassicLevel<string, string>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'utf8',
    });
    await raw.open();
    const keys = await raw.keys({ gte: 'f:', lt: 'f;' }).all();
    await raw.del(keys[1] as string); // the segment holding a's DISPATCHED
    await raw.close();
    const err = await openError({ dir });
    expect(err.message).toMatch(/task a: transition seq 4 follows seq 2/);
    const repaired = await open({ dir, repair: true });
    expect(repaired.openReport.damagedTasks).toEqual(['a']);
    expect(repaired.openReport.lost.join('\n')).toMatch(/feed revisions 3\.\.3 are lost/);
  });
});
