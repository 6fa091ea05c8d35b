/**
 * The node flags dsat starts each service process with (`dsat up --processes`, `dsat bench`, the
 * container image's entrypoint), on top of the launcher's own. Both shape V8's heap, which V8 sizes
 * from flags read once at start-up: a service keeps little alive (the status service ~20 MB in the
 * middle of a benchmark) but under load V8 lets its heap grow far past that.
 *
 * - `--max-semi-space-size=4`: the young generation grows to 4 MB a half instead of 16 (32 MB
 *   resident). At 2 MB the peak falls no further.
 * - `--heap-growing-percent=200`: a major GC when the old generation has grown to 3 times what the
 *   last one left alive, where V8 lets a fast-collecting heap reach 4 times. At 2 times CPU per task
 *   rises by about a tenth.
 *
 * Together the six pipeline3 processes peak ~160 MB lower (T) at no CPU, throughput or latency
 * cost the benchmark can tell apart (README, "Performance").
 *
 * - `--no-parallel-scavenge`: each process scavenges its young generation on its own thread. The
 *   helper threads of a parallel scavenge only compete for the same two cores with the other
 *   processes: 7 of 8 T pairs (2026-12-03 23:03–23:12) took less CPU per task without them, by
 *   the median 0.276 against 0.282 ms, with the same peak RSS.
 */
export const SERVICE_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=4',
  '--heap-growing-percent=200',
  '--no-parallel-scavenge',
];

/** The tracker's and a worker's heap: they hold little and use little CPU (below). */
const LEAN_HEAP = ['--max-semi-space-size=2', '--heap-growing-percent=100'];

/**
 * A service's own values of some of SERVICE_NODE_FLAGS (T and L runs of 2026-12-03):
 *
 * - status: its young objects are mostly the copies a commit makes of the live tasks it moves,
 *   which survive a scavenge or two; with 4 MB halves it scavenged ~110 times in a T run, ~3 ms
 *   each. With 8 (7 pairs) its CPU per task fell 5-8%, T rose 3-9%, the peak 3-10 MB; 16 saved
 *   ~5% more of its CPU for ~20 MB more.
 * - tracker, worker: a 2 MB young generation and a major GC at twice what the last one left
 *   (3 T pairs, 2 L pairs): each peaks ~13 MB lower (74 against 87 MB), the mesh 55 MB lower in T
 *   and L, for +0.003-0.005 CPU ms per task each (+2% of the mesh's in T; L the same).
 */
export const SERVICE_NODE_FLAG_OVERRIDES: Readonly<Record<string, readonly string[]>> = {
  status: ['--max-semi-space-size=8'],
  tracker: LEAN_HEAP,
  worker: LEAN_HEAP,
};

/**
 * The flag's name, as node accepts it: dashes or underscores, and a boolean's `--no-` form names
 * the same flag (a user's `--parallel-scavenge` is theirs to keep).
 */
function flagName(flag: string): string {
  return flag.replace(/^--/, '').split('=')[0]!.replaceAll('_', '-').replace(/^no-/, '');
}

/** dsat's node flags for one service (status, router, tracker, worker): its overrides applied. */
export function nodeFlagsOf(service: string): string[] {
  const own = SERVICE_NODE_FLAG_OVERRIDES[service] ?? [];
  return SERVICE_NODE_FLAGS.map((f) => own.find((o) => flagName(o) === flagName(f)) ?? f);
}

/**
 * The flags a service process starts with: the launcher's own (`execArgv`, e.g. tsx's loader or a
 * profiler) and then each of dsat's for `service` that neither they nor NODE_OPTIONS already set,
 * so that a user's own choice wins.
 */
export function serviceNodeFlags(
  service: string,
  execArgv: readonly string[],
  nodeOptions: string = process.env.NODE_OPTIONS ?? '',
): string[] {
  const set = new Set(
    [...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName),
  );
  return [...execArgv, ...nodeFlagsOf(service).filter((f) => !set.has(flagName(f)))];
}

/**
 * Environment each service process starts with unless it is already set. `MALLOC_ARENA_MAX=2`:
 * glibc gives each thread that allocates (libuv's pool, where LevelDB writes, reads and syncs) an
 * arena of its own that it seldom returns; with two, the six pipeline3 processes peaked ~36 MB
 * lower in the T run (the status service ~22 MB), at no CPU cost the benchmark could tell.
 */
export const SERVICE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** `env` with each of SERVICE_ENV it does not set: a user's own value wins. */
export function serviceEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const missing = Object.entries(SERVICE_ENV).filter(([name]) => env[name] === undefined);
  return { ...Object.fromEntries(missing), ...env };
}
