/**
 * The node flags dsat starts each service process with (`dsat up --processes`, `dsat bench`), on
 * top of the launcher's own.
 *
 * `--max-semi-space-size=4`: under load V8 grows each process's young generation to its 16 MB
 * default (32 MB resident for its two halves) although a service keeps little alive; at 4 MB the
 * six pipeline3 processes peak ~85 MB lower in all (T and L runs), at no CPU, throughput or latency
 * cost the benchmark can tell apart. At 2 MB the peak falls no further. This must be a start-up
 * flag: V8 sizes its heap once, before any script runs.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/** The flag's name, as node accepts it: dashes or underscores. */
function flagName(flag: string): string {
  return flag.replace(/^--/, '').split('=')[0]!.replaceAll('_', '-');
}

/**
 * The flags a service process starts with: the launcher's own (`execArgv`, e.g. tsx's loader or a
 * profiler) and then each of dsat's that neither they nor NODE_OPTIONS already set, so that a
 * user's own choice wins.
 */
export function serviceNodeFlags(
  execArgv: readonly string[],
  nodeOptions: string = process.env.NODE_OPTIONS ?? '',
): string[] {
  const set = new Set(
    [...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName),
  );
  return [...execArgv, ...SERVICE_NODE_FLAGS.filter((f) => !set.has(flagName(f)))];
}
