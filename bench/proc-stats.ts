import fs from 'node:fs';

const TICKS_PER_S = 100; // USER_HZ on Linux

export interface ProcStats {
  /** utime + stime, seconds. */
  readonly cpuS: number;
  /** stime alone: the kernel's work for the process (system calls, page faults), seconds. */
  readonly systemS: number;
  /** Peak resident set (VmHWM), KiB. */
  readonly hwmKb: number;
  readonly rssKb: number;
}

/** CPU and peak RSS of a live process from /proc, as the peers' benchmark reads them. */
export function procStats(pid: number): ProcStats | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const systemS = Number(fields[12]) / TICKS_PER_S;
    const cpuS = Number(fields[11]) / TICKS_PER_S + systemS;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0);
    return { cpuS, systemS, hwmKb: kb('VmHWM'), rssKb: kb('VmRSS') };
  } catch {
    return undefined;
  }
}
