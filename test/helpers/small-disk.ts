import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tempDir } from './temp-dir';

const run = promisify(execFile);

/** A tmpfs of a given size: a disk that fills up for real (ENOSPC), and can be grown. */
export interface SmallDisk {
  readonly path: string;
  /** Makes room: remounts it at `megabytes`, keeping its files. */
  grow(megabytes: number): Promise<void>;
  cleanup(): Promise<void>;
}

/** Why a tmpfs cannot be mounted here, or undefined when it can. */
export function smallDiskUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  return undefined;
}

export async function mountSmallDisk(megabytes: number): Promise<SmallDisk> {
  const dir = tempDir('dsat-disk-');
  await run('mount', ['-t', 'tmpfs', '-o', `size=${megabytes}m`, 'tmpfs', dir.path]);
  return {
    path: dir.path,
    grow: async (mb) => {
      await run('mount', ['-o', `remount,size=${mb}m`, dir.path]);
    },
    cleanup: async () => {
      // Lazy: a process that still holds a file there lets go when it exits.
      await run('umount', ['-l', dir.path]).catch(() => undefined);
      dir.cleanup();
    },
  };
}
