import fs from 'node:fs';
import path from 'node:path';

/**
 * Typed configuration, read once from flags and environment into a frozen object. Every option
 * names its flag and its environment variable; a bad value never stops the parse, so the error
 * lists every problem at once.
 */

type Parser<T> = (raw: string) => T;

export interface OptionSpec<T> {
  /** The environment variable, e.g. `DSAT_STATUS_PORT`. */
  readonly env: string;
  readonly description: string;
  readonly default: T;
  /** The value's shape for --help, e.g. `<port>`. */
  readonly valueName: string;
  readonly parse: Parser<T>;
  /** True for booleans: the flag takes no value and `--no-x` turns it off. */
  readonly boolean?: boolean;
}

export type ConfigSpec = Record<string, OptionSpec<unknown>>;
export type ConfigOf<S extends ConfigSpec> = {
  readonly [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never;
};

/** The flag of an option key: `dataDir` → `--data-dir`. */
export function flagName(key: string): string {
  return '--' + key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

export interface ConfigProblem {
  readonly key: string;
  readonly flag: string;
  readonly env: string;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(
      'invalid configuration:\n' +
        problems.map((p) => `  ${p.flag} (${p.env}): ${p.message}`).join('\n'),
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function option<T>(
  valueName: string,
  parse: Parser<T>,
  env: string,
  description: string,
  def: T,
): OptionSpec<T> {
  return { env, description, default: def, valueName, parse };
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};
const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1000,
  kib: 1024,
  mb: 1_000_000,
  mib: 1024 * 1024,
  gb: 1_000_000_000,
  gib: 1024 * 1024 * 1024,
};

/** Parses `500ms`, `10s`, `2m`, `1h`, `7d` or a bare number of milliseconds. */
export function parseDuration(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(raw.trim());
  if (!m) throw new Error(`${JSON.stringify(raw)} is not a duration (e.g. 500ms, 10s, 2m, 1h, 7d)`);
  return Math.round(Number(m[1]) * (DURATION_UNITS[m[2] ?? 'ms'] ?? 1));
}

/** Parses `4MiB`, `256KiB`, `1000` (bytes). */
export function parseBytes(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(raw.trim());
  const unit = BYTE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined) throw new Error(`${JSON.stringify(raw)} is not a size (e.g. 4MiB)`);
  return Math.round(Number(m[1]) * unit);
}

function parseInteger(min: number, max: number): Parser<number> {
  return (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`${JSON.stringify(raw)} is not an integer`);
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`${n} is out of range ${min}..${max}`);
    return n;
  };
}

function parseBool(raw: string): boolean {
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new Error(`${JSON.stringify(raw)} is not a boolean (true or false)`);
}

function parseAddress(raw: string): string {
  const v = raw.trim();
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v);
  if (!m || Number(m[2]) > 65535 || Number(m[2]) === 0) {
    throw new Error(`${JSON.stringify(raw)} is not an address host:port`);
  }
  return v;
}

function parseList(raw: string): string[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * A data directory: it must be a directory we can write to, or a path we can create. Nothing is
 * created here; the service creates it when it opens its store.
 */
export function parseDataDir(raw: string): string {
  const dir = path.resolve(raw);
  let probe = dir;
  for (;;) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(probe);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(`${dir} is not usable: ${(err as Error).message}`);
      }
    }
    if (st) {
      if (!st.isDirectory()) {
        throw new Error(
          probe === dir
            ? `${dir} is not a directory`
            : `${dir} cannot be created: ${probe} is a file`,
        );
      }
      try {
        fs.accessSync(probe, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
      } catch {
        throw new Error(`${probe} is not readable and writable`);
      }
      return dir;
    }
    const parent = path.dirname(probe);
    if (parent === probe) throw new Error(`${dir} cannot be created`);
    probe = parent;
  }
}

function oneOf<T extends string>(values: readonly T[]): Parser<T> {
  return (raw) => {
    const v = raw.trim() as T;
    if (!values.includes(v))
      throw new Error(`${JSON.stringify(raw)} is not one of ${values.join(', ')}`);
    return v;
  };
}

/** Builders for option specs, one per value shape. */
export const opt = {
  string: (env: string, description: string, def: string) =>
    option('<text>', (r) => r, env, description, def),
  int: (env: string, description: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
    option('<n>', parseInteger(min, max), env, description, def),
  port: (env: string, description: string, def: number) =>
    option('<port>', parseInteger(0, 65535), env, description, def),
  /** A port, or none when unset. */
  optionalPort: (env: string, description: string) =>
    option<number | undefined>('<port>', parseInteger(0, 65535), env, description, undefined),
  bool: (env: string, description: string, def: boolean): OptionSpec<boolean> => ({
    ...option('', parseBool, env, description, def),
    boolean: true,
  }),
  duration: (env: string, description: string, def: number) =>
    option('<duration>', parseDuration, env, description, def),
  bytes: (env: string, description: string, def: number) =>
    option('<size>', parseBytes, env, description, def),
  address: (env: string, description: string, def: string) =>
    option('<host:port>', parseAddress, env, description, def),
  addresses: (env: string, description: string, def: string[]) =>
    option('<host:port,...>', (r) => parseList(r).map(parseAddress), env, description, def),
  list: (env: string, description: string, def: string[]) =>
    option('<a,b,...>', parseList, env, description, def),
  dataDir: (env: string, description: string, def: string) =>
    option('<dir>', parseDataDir, env, description, def),
  oneOf: <T extends string>(values: readonly T[], env: string, description: string, def: T) =>
    option(`<${values.join('|')}>`, oneOf(values), env, description, def),
  pemFile: (env: string, description: string) =>
    option('<file>', parsePemFile, env, description, ''),
  file: (env: string, description: string) =>
    option('<file>', parseReadableFile, env, description, ''),
};

/** A file's text, or an error saying why it cannot be read in words a user acts on. */
function readConfigFile(raw: string): string {
  try {
    return fs.readFileSync(raw, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'a directory'
          : (err as Error).message;
    throw new Error(`cannot read ${raw}: ${why}`);
  }
}

/** A file that can be read now; the value stays its path (read again when used). */
function parseReadableFile(raw: string): string {
  readConfigFile(raw);
  return raw;
}

/** A readable PEM file (certificate or key); the value stays its path. */
function parsePemFile(raw: string): string {
  if (!readConfigFile(raw).includes('-----BEGIN ')) throw new Error(`${raw} is not a PEM file`);
  return raw;
}

/**
 * TLS, the same on every service and the CLI. A certificate and key turn TLS on for the server
 * and are shown to peers that ask for one; a CA file turns TLS on for calls to other services.
 */
export const tlsOptions = {
  tlsCert: opt.pemFile(
    'DSAT_TLS_CERT',
    'PEM certificate (chain) of this process: serves TLS, and is shown to peers that ask (mTLS).',
  ),
  tlsKey: opt.pemFile('DSAT_TLS_KEY', 'PEM private key of --tls-cert.'),
  tlsCa: opt.pemFile(
    'DSAT_TLS_CA',
    'PEM certificate authorities trusted for peers: calls to other services use TLS and check them.',
  ),
  tlsClientAuth: opt.bool(
    'DSAT_TLS_CLIENT_AUTH',
    'Serve only clients that show a certificate signed by --tls-ca (mTLS).',
    false,
  ),
  authTokenFile: opt.file(
    'DSAT_AUTH_TOKEN_FILE',
    'File holding the bearer token (a JWT) this process shows on its calls, read again when it changes; needs TLS.',
  ),
} as const;
export type TlsConfig = ConfigOf<typeof tlsOptions>;

/** Bearer tokens a server checks on every call (services/shared/auth.ts has the scopes). */
export const authOptions = {
  authKey: opt.file(
    'DSAT_AUTH_KEY',
    'Check a bearer token on every call against this PEM public key, or this file of an HMAC secret (at least 32 bytes).',
  ),
  authIssuer: opt.string('DSAT_AUTH_ISSUER', 'With --auth-key: the iss a token must name.', ''),
  authAudience: opt.string('DSAT_AUTH_AUDIENCE', 'With --auth-key: the aud a token must name.', ''),
  rateLimit: opt.int(
    'DSAT_RATE_LIMIT',
    "Most calls a second one caller may start (its token's subject, else its address); more get RESOURCE_EXHAUSTED. 0: no limit.",
    0,
  ),
} as const;

export type FlagValues = Readonly<Record<string, string | boolean | undefined>>;

/**
 * Reads every option of `spec`: a flag wins over the environment, which wins over the default.
 * Throws one ConfigError listing every bad value.
 */
export function loadConfig<S extends ConfigSpec>(
  spec: S,
  flags: FlagValues = {},
  env: NodeJS.ProcessEnv = process.env,
): ConfigOf<S> {
  const out: Record<string, unknown> = {};
  const problems: ConfigProblem[] = [];
  for (const [key, o] of Object.entries(spec)) {
    const flag = flags[key];
    const raw = flag !== undefined ? flag : env[o.env];
    if (raw === undefined || raw === '') {
      out[key] = o.default;
      continue;
    }
    try {
      out[key] = typeof raw === 'boolean' ? raw : o.parse(raw);
    } catch (err) {
      problems.push({ key, flag: flagName(key), env: o.env, message: (err as Error).message });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as ConfigOf<S>;
}

/** Options every dsat gRPC server has. `svc` prefixes the port's environment variable. */
export function serverOptions(svc: string, defaultPort: number) {
  const SVC = svc.toUpperCase();
  return {
    host: opt.string('DSAT_HOST', 'Interface to listen on.', '127.0.0.1'),
    port: opt.port(
      `DSAT_${SVC}_PORT`,
      `Port of the ${svc} gRPC server (0 picks a free one).`,
      defaultPort,
    ),
    logLevel: opt.oneOf(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
      'DSAT_LOG_LEVEL',
      'Log level of the JSON logs written to stderr.',
      'info',
    ),
    shutdownGrace: opt.duration(
      'DSAT_SHUTDOWN_GRACE',
      'How long a graceful shutdown waits for calls to end before it forces them.',
      5_000,
    ),
    keepaliveTime: opt.duration('DSAT_KEEPALIVE_TIME', 'Interval of keepalive pings.', 10_000),
    keepaliveTimeout: opt.duration(
      'DSAT_KEEPALIVE_TIMEOUT',
      'How long a keepalive ping may go unanswered before the connection is dropped.',
      5_000,
    ),
    maxMessageSize: opt.bytes(
      'DSAT_MAX_MESSAGE_SIZE',
      'Largest gRPC message accepted or sent.',
      4 * 1024 * 1024,
    ),
    maxConcurrentStreams: opt.int(
      'DSAT_MAX_CONCURRENT_STREAMS',
      'Most concurrent streams on one connection.',
      1000,
      1,
    ),
    metricsPort: opt.optionalPort(
      'DSAT_METRICS_PORT',
      'Serve Prometheus metrics at http://HOST:PORT/metrics (0 picks a free port); unset, none are served (OTEL_METRICS_EXPORTER=otlp sends them to a collector instead).',
    ),
    reflection: opt.bool(
      'DSAT_REFLECTION',
      'Serve gRPC server reflection (grpcurl list/describe): for development; off, a client cannot list the services.',
      false,
    ),
    ...tlsOptions,
    ...authOptions,
  } as const;
}

export type ServerConfig = ConfigOf<ReturnType<typeof serverOptions>>;

export const DEFAULT_PORTS = { status: 7401, router: 7402, tracker: 7403, worker: 7404 } as const;

export const statusConfigSpec = {
  ...serverOptions('status', DEFAULT_PORTS.status),
  dataDir: opt.dataDir('DSAT_DATA_DIR', 'Directory of the LevelDB status store.', './.dsat'),
  sync: opt.bool(
    'DSAT_SYNC',
    'fsync every commit. Off keeps acknowledged writes across a process crash but not a power loss.',
    true,
  ),
  repair: opt.bool(
    'DSAT_REPAIR',
    'Repair a damaged store at start-up and report what was lost, instead of refusing to start.',
    false,
  ),
  retention: opt.duration(
    'DSAT_RETENTION',
    'How long terminal tasks and their logs are kept.',
    7 * 86_400_000,
  ),
  feedWindow: opt.duration(
    'DSAT_FEED_WINDOW',
    'How long the global feed is kept for watches that resume.',
    86_400_000,
  ),
  maxUnfinishedBytes: opt.bytes(
    'DSAT_MAX_UNFINISHED_BYTES',
    'Most memory the unfinished tasks may take, kept here and by the routers: their payloads, and 2 KiB a task. A submit beyond gets RESOURCE_EXHAUSTED; tasks already in the mesh go on. 0: no limit.',
    1024 * 1024 * 1024,
  ),
  lockWait: opt.duration(
    'DSAT_LOCK_WAIT',
    'How long to wait for the process that holds the store to let it go (a rolling restart starts the new one first); 0 fails at once with LEVEL_LOCKED.',
    0,
  ),
} as const;

const statusAddress = opt.address(
  'DSAT_STATUS_ADDRESS',
  'Address of the status service.',
  `127.0.0.1:${DEFAULT_PORTS.status}`,
);
const trackerAddress = opt.address(
  'DSAT_TRACKER_ADDRESS',
  'Address of the tracker, for membership.',
  `127.0.0.1:${DEFAULT_PORTS.tracker}`,
);

export const routerConfigSpec = {
  ...serverOptions('router', DEFAULT_PORTS.router),
  statusAddress,
  trackerAddress,
  routerId: opt.string('DSAT_ROUTER_ID', 'Identifier of this router (default: generated).', ''),
  stages: opt.list('DSAT_ROUTER_STAGES', 'Stages this router serves (default: all).', []),
  dispatch: opt.oneOf(
    ['round-robin', 'least-in-flight'] as const,
    'DSAT_DISPATCH',
    'How a task picks among the workers with free credit.',
    'round-robin',
  ),
  maxPayloadSize: opt.bytes('DSAT_MAX_PAYLOAD_SIZE', 'Largest task payload accepted.', 1024 * 1024),
  maxWaitingWriteBytes: opt.bytes(
    'DSAT_MAX_WAITING_WRITE_BYTES',
    'Most bytes of writes this router holds while the status service is away or slow; a submit beyond gets UNAVAILABLE, and nothing is created.',
    64 * 1024 * 1024,
  ),
  heartbeatInterval: opt.duration(
    'DSAT_HEARTBEAT_INTERVAL',
    'How often workers heartbeat a running attempt (told to them in Welcome).',
    1_000,
  ),
  progressCheckpoint: opt.duration(
    'DSAT_PROGRESS_CHECKPOINT',
    'How often, at most, the progress a worker reports is stored, per running attempt.',
    5_000,
  ),
  statusWindow: opt.int(
    'DSAT_STATUS_WINDOW',
    'Most write batches in flight at once on the stream to the status service (one goes while another is in flight only when full).',
    4,
    1,
    64,
  ),
  maxSubmitPending: opt.int(
    'DSAT_MAX_SUBMIT_PENDING',
    'Most tasks of one SubmitTasks stream waiting to be durable before the router stops reading it.',
    10_000,
    1,
  ),
  pipelineCacheTtl: opt.duration(
    'DSAT_PIPELINE_CACHE_TTL',
    'How long a submit may use a cached latest pipeline version before it is read again (a read slower than 250 ms, as with the status service away, leaves the cached one in use).',
    1_000,
  ),
} as const;

export const trackerConfigSpec = {
  ...serverOptions('tracker', DEFAULT_PORTS.tracker),
  statusAddress,
  memberTtl: opt.duration('DSAT_MEMBER_TTL', 'How long a silent member stays in the mesh.', 15_000),
} as const;

export const workerConfigSpec = {
  ...serverOptions('worker', 0),
  routers: opt.addresses('DSAT_ROUTERS', 'Routers to connect to, tried in turn.', [
    `127.0.0.1:${DEFAULT_PORTS.router}`,
  ]),
  trackerAddress,
  workerId: opt.string('DSAT_WORKER_ID', 'Identifier of this worker (default: generated).', ''),
  stages: opt.list('DSAT_WORKER_STAGES', 'Stages this worker serves.', []),
  concurrency: opt.int('DSAT_CONCURRENCY', 'Most tasks run at once.', 8, 1, 10_000),
  handler: opt.string(
    'DSAT_HANDLER',
    'Module whose exports are the stage handlers (a path to a .js or .ts file).',
    '',
  ),
  maxReconnectBackoff: opt.duration(
    'DSAT_MAX_RECONNECT_BACKOFF',
    'Longest wait between two attempts to reach a router (at most 5s).',
    5_000,
  ),
  drainTimeout: opt.duration(
    'DSAT_DRAIN_TIMEOUT',
    'How long a draining worker waits for its running tasks before it aborts them.',
    30_000,
  ),
} as const;

export type StatusConfig = ConfigOf<typeof statusConfigSpec>;
export type RouterConfig = ConfigOf<typeof routerConfigSpec>;
export type TrackerConfig = ConfigOf<typeof trackerConfigSpec>;
export type WorkerConfig = ConfigOf<typeof workerConfigSpec>;

/** Where the `dsat` client commands find the mesh. */
export const cliConfigSpec = {
  router: opt.address(
    'DSAT_ROUTER_ADDRESS',
    'Address of a router.',
    `127.0.0.1:${DEFAULT_PORTS.router}`,
  ),
  status: opt.address(
    'DSAT_STATUS_ADDRESS',
    'Address of the status service.',
    `127.0.0.1:${DEFAULT_PORTS.status}`,
  ),
  tracker: opt.address(
    'DSAT_TRACKER_ADDRESS',
    'Address of the tracker.',
    `127.0.0.1:${DEFAULT_PORTS.tracker}`,
  ),
  traces: opt.string(
    'DSAT_TRACES_URL',
    'URL of the span receiver of `dsat up`, for `dsat trace`.',
    'http://127.0.0.1:7418',
  ),
  timeout: opt.duration('DSAT_TIMEOUT', 'Deadline of each call.', 10_000),
  tlsCa: tlsOptions.tlsCa,
  tlsCert: tlsOptions.tlsCert,
  tlsKey: tlsOptions.tlsKey,
  authTokenFile: tlsOptions.authTokenFile,
} as const;
export type CliConfig = ConfigOf<typeof cliConfigSpec>;
