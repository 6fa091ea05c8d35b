import type { KeyObject } from 'node:crypto';
import { createPublicKey, createSecretKey } from 'node:crypto';
import fs from 'node:fs';
import type * as Jose from 'jose';
import type { CallContext, ServerMiddleware } from 'nice-grpc';
import { composeServerMiddleware, ServerError, Status } from 'nice-grpc-common';

/** jose is loaded only where tokens are checked: ~3 MB a process that checks none would carry. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const loadJose = (): typeof Jose => require('jose') as typeof Jose;

/**
 * Bearer tokens with scopes, checked per method: `submit` (hand tasks in, cancel them), `read`
 * (tasks, pipelines, the mesh), `work` (run tasks, join the mesh), `admin` (everything: pipelines,
 * dead letters, the store's writes, which routers and the tracker make). A method this table does
 * not name is refused whatever the token says (deny by default).
 */
export type Scope = 'submit' | 'read' | 'work' | 'admin';

export const METHOD_SCOPES: Readonly<Record<string, Scope | 'open'>> = {
  // Probes carry no token.
  '/grpc.health.v1.Health/Check': 'open',
  '/grpc.health.v1.Health/Watch': 'open',
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo': 'read',
  '/dsat.router.v1.RouterService/SubmitTask': 'submit',
  '/dsat.router.v1.RouterService/SubmitTasks': 'submit',
  '/dsat.router.v1.RouterService/CancelTask': 'submit',
  '/dsat.router.v1.RouterService/CompleteAsync': 'work',
  '/dsat.router.v1.RouterService/GetRouterLoad': 'read',
  '/dsat.router.v1.RouterService/ConnectWorker': 'work',
  '/dsat.router.v1.RouterService/ForwardTasks': 'admin',
  '/dsat.status.v1.StatusService/GetTask': 'read',
  '/dsat.status.v1.StatusService/ListTasks': 'read',
  '/dsat.status.v1.StatusService/ListUnfinishedTasks': 'read',
  '/dsat.status.v1.StatusService/GetTaskHistory': 'read',
  '/dsat.status.v1.StatusService/WatchTask': 'read',
  '/dsat.status.v1.StatusService/WatchEvents': 'read',
  '/dsat.status.v1.StatusService/ApplyTransitions': 'admin',
  '/dsat.status.v1.StatusService/CommitTransitions': 'admin',
  '/dsat.status.v1.StatusService/DeleteTasks': 'admin',
  '/dsat.status.v1.StatusService/SavePipeline': 'admin',
  '/dsat.status.v1.StatusService/GetPipeline': 'read',
  '/dsat.status.v1.StatusService/ListPipelines': 'read',
  '/dsat.status.v1.StatusService/GetStoreStats': 'read',
  '/dsat.tracker.v1.TrackerService/ApplyPipeline': 'admin',
  '/dsat.tracker.v1.TrackerService/GetPipeline': 'read',
  '/dsat.tracker.v1.TrackerService/ListPipelines': 'read',
  '/dsat.tracker.v1.TrackerService/ListDeadLettered': 'read',
  '/dsat.tracker.v1.TrackerService/RedriveTasks': 'admin',
  '/dsat.tracker.v1.TrackerService/PurgeTasks': 'admin',
  '/dsat.tracker.v1.TrackerService/Join': 'work',
  '/dsat.tracker.v1.TrackerService/Heartbeat': 'work',
  '/dsat.tracker.v1.TrackerService/Leave': 'work',
  '/dsat.tracker.v1.TrackerService/ResolveStage': 'read',
  '/dsat.tracker.v1.TrackerService/GetMesh': 'read',
  '/dsat.worker.v1.WorkerService/GetWorkerInfo': 'read',
  '/dsat.worker.v1.WorkerService/DrainWorker': 'admin',
};

export interface AuthSettings {
  /** PEM public key (RS/ES/EdDSA tokens) or a file holding an HMAC secret (HS tokens). */
  readonly authKey: string;
  readonly authIssuer?: string;
  readonly authAudience?: string;
}

/** The key tokens are checked with: a PEM public key, else the file's bytes as an HMAC secret. */
export function loadVerificationKey(file: string): KeyObject {
  const text = fs.readFileSync(file);
  if (text.includes('-----BEGIN ')) return createPublicKey(text);
  const secret = Buffer.from(text.toString('utf8').trim(), 'utf8');
  if (secret.length < 32) {
    throw new Error(`${file}: an HMAC secret must be at least 32 bytes, it has ${secret.length}`);
  }
  return createSecretKey(secret);
}

interface Verified {
  readonly scopes: ReadonlySet<string>;
  readonly subject: string;
  /** Seconds since the epoch; the cache never serves a token past it. */
  readonly expires: number;
}

/** Reads the scopes of a token: OAuth's space-separated `scope`, or an `scp` list. */
function scopesOf(payload: Record<string, unknown>): Set<string> {
  const { scope, scp } = payload;
  if (typeof scope === 'string') return new Set(scope.split(' ').filter((s) => s !== ''));
  if (Array.isArray(scp)) return new Set(scp.filter((s): s is string => typeof s === 'string'));
  return new Set();
}

function unauthenticated(why: string): ServerError {
  return new ServerError(Status.UNAUTHENTICATED, `authorization: ${why}`);
}

/** Why a token was refused, in words a client can act on. */
function refusal(err: unknown, joseErrors: typeof Jose.errors): ServerError {
  if (err instanceof joseErrors.JWTExpired) return unauthenticated('the token has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    return unauthenticated(`the token's ${err.claim} claim is not accepted (${err.reason})`);
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return unauthenticated('the token is not signed with the key this service trusts');
  }
  return unauthenticated(`not a valid token (${(err as Error).message})`);
}

/**
 * Checks every call against METHOD_SCOPES before its handler runs, so a refused call has no
 * effect: UNAUTHENTICATED without a valid bearer token, PERMISSION_DENIED without the scope.
 * `admin` holds every scope. Verified tokens are remembered until they expire (a worker or a
 * router opens many calls with one token).
 */
export function createAuthMiddleware(settings: AuthSettings): ServerMiddleware {
  const { jwtVerify, errors } = loadJose();
  const key = loadVerificationKey(settings.authKey);
  const options = {
    issuer: settings.authIssuer || undefined,
    audience: settings.authAudience || undefined,
    requiredClaims: ['exp'],
  };
  const cache = new Map<string, Verified>();

  async function verify(token: string): Promise<Verified> {
    const now = Date.now() / 1000;
    const known = cache.get(token);
    if (known !== undefined && known.expires > now) return known;
    let verified: Verified;
    try {
      const { payload } = await jwtVerify(token, key, options);
      verified = {
        scopes: scopesOf(payload),
        subject: payload.sub ?? '',
        expires: payload.exp ?? now,
      };
    } catch (err) {
      throw refusal(err, errors);
    }
    if (cache.size >= 1_000) cache.clear();
    cache.set(token, verified);
    return verified;
  }

  return async function* auth(call, context: CallContext) {
    const needs = METHOD_SCOPES[call.method.path];
    if (needs === undefined) {
      throw new ServerError(Status.PERMISSION_DENIED, `${call.method.path} is open to no token`);
    }
    if (needs !== 'open') {
      const header = context.metadata.get('authorization');
      if (header === undefined) throw unauthenticated('a bearer token is required');
      const match = /^Bearer\s+(\S+)$/i.exec(header);
      if (match === null) throw unauthenticated('the header must be "Bearer <token>"');
      const { scopes, subject } = await verify(match[1]!);
      if (!scopes.has(needs) && !scopes.has('admin')) {
        throw new ServerError(
          Status.PERMISSION_DENIED,
          `${call.method.path} needs the ${needs} scope; the token of ${subject || 'this client'} has ${[...scopes].join(', ') || 'none'}`,
        );
      }
      callerIdentity.set(context, `sub:${subject}`);
    }
    return yield* call.next(call.request, context);
  };
}

/** Who a call comes from, for the rate limit: its token's subject, set by the auth middleware. */
const callerIdentity = new WeakMap<CallContext, string>();

/** The caller's token subject, or its address without the port when tokens are not checked. */
export function identityOf(context: CallContext): string {
  const known = callerIdentity.get(context);
  if (known !== undefined) return known;
  const peer = context.peer.replace(/^ipv[46]:/, '');
  return `addr:${peer.replace(/:\d+$/, '')}`;
}

/**
 * At most `perSecond` calls started per second by one identity (a token bucket holding one
 * second's worth, so a burst of that size passes); more are RESOURCE_EXHAUSTED before their
 * handler runs, and other identities are not slowed. A stream counts once, when it opens.
 */
export function createRateLimitMiddleware(perSecond: number): ServerMiddleware {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return async function* rateLimit(call, context: CallContext) {
    if (METHOD_SCOPES[call.method.path] !== 'open') {
      const identity = identityOf(context);
      const now = performance.now();
      let bucket = buckets.get(identity);
      if (bucket === undefined) {
        // Identities come and go (addresses, rotated subjects): forget all when there are many.
        if (buckets.size >= 10_000) buckets.clear();
        bucket = { tokens: perSecond, at: now };
        buckets.set(identity, bucket);
      }
      bucket.tokens = Math.min(perSecond, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
      bucket.at = now;
      if (bucket.tokens < 1) {
        throw new ServerError(
          Status.RESOURCE_EXHAUSTED,
          `${identity.replace(/^\w+:/, '')} started more than ${perSecond} calls a second (--rate-limit); try again shortly`,
        );
      }
      bucket.tokens -= 1;
    }
    return yield* call.next(call.request, context);
  };
}

/**
 * What a server checks before any handler: tokens (with --auth-key), then the caller's rate (with
 * --rate-limit). One pass-through layer when neither is set.
 */
export function createAccessMiddleware(
  settings: AuthSettings & { readonly rateLimit: number },
): ServerMiddleware {
  const auth = settings.authKey ? createAuthMiddleware(settings) : undefined;
  const limit = settings.rateLimit > 0 ? createRateLimitMiddleware(settings.rateLimit) : undefined;
  if (auth !== undefined && limit !== undefined) return composeServerMiddleware(auth, limit);
  return (
    auth ??
    limit ??
    async function* open(call, context) {
      return yield* call.next(call.request, context);
    }
  );
}
