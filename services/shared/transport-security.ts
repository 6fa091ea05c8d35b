import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { ConfigProblem, TlsConfig } from './config';
import { ConfigError, flagName, tlsOptions } from './config';

/** What a channel or server needs to know about TLS; every field may be left out (plain text). */
export type TlsSettings = Partial<TlsConfig>;

function problem(key: keyof typeof tlsOptions, message: string): ConfigProblem {
  return { key, flag: flagName(key), env: tlsOptions[key].env, message };
}

/** A certificate without its key (or the other way round) is a mistake, not plain text. */
function checkPair(tls: TlsSettings, problems: ConfigProblem[]): void {
  if (tls.tlsCert && !tls.tlsKey) problems.push(problem('tlsKey', 'is required with --tls-cert'));
  if (tls.tlsKey && !tls.tlsCert) problems.push(problem('tlsCert', 'is required with --tls-key'));
}

/** Throws a ConfigError naming every TLS option that cannot work with the others. */
export function checkTlsSettings(tls: TlsSettings): void {
  const problems: ConfigProblem[] = [];
  checkPair(tls, problems);
  if (tls.authTokenFile && !tls.tlsCa && !tls.tlsCert) {
    problems.push(
      problem(
        'authTokenFile',
        'needs TLS (--tls-ca): a bearer token sent in plain text can be read and replayed',
      ),
    );
  }
  if (tls.tlsClientAuth && !tls.tlsCa) {
    problems.push(problem('tlsCa', 'is required with --tls-client-auth: it signs the clients'));
  }
  if (tls.tlsClientAuth && !tls.tlsCert) {
    problems.push(problem('tlsCert', 'is required with --tls-client-auth: mTLS needs TLS'));
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

/**
 * The server's credentials: TLS with the certificate and key when they are set, checking client
 * certificates against --tls-ca with --tls-client-auth (mTLS); plain text otherwise.
 */
export function serverCredentials(tls: TlsSettings): grpc.ServerCredentials {
  checkTlsSettings(tls);
  if (!tls.tlsCert || !tls.tlsKey) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.tlsCa ? fs.readFileSync(tls.tlsCa) : null,
    [{ cert_chain: fs.readFileSync(tls.tlsCert), private_key: fs.readFileSync(tls.tlsKey) }],
    tls.tlsClientAuth === true,
  );
}

const channelCache = new Map<string, grpc.ChannelCredentials>();

/**
 * A client's credentials: TLS when a CA or a certificate is set (the CA, else the system's roots,
 * checks the server; the certificate is shown when the server asks); undefined for plain text.
 */
export function channelCredentials(tls: TlsSettings): grpc.ChannelCredentials | undefined {
  if (!tls.tlsCa && !tls.tlsCert) {
    checkTlsSettings(tls);
    return undefined;
  }
  const key = `${tls.tlsCa}\0${tls.tlsCert}\0${tls.tlsKey}\0${tls.authTokenFile}`;
  let credentials = channelCache.get(key);
  if (credentials === undefined) {
    quietIpServerNameWarning();
    checkTlsSettings(tls);
    credentials = grpc.credentials.createSsl(
      tls.tlsCa ? fs.readFileSync(tls.tlsCa) : null,
      tls.tlsKey ? fs.readFileSync(tls.tlsKey) : null,
      tls.tlsCert ? fs.readFileSync(tls.tlsCert) : null,
    );
    if (tls.authTokenFile) credentials = credentials.compose(bearerToken(tls.authTokenFile));
    channelCache.set(key, credentials);
  }
  return credentials;
}

/**
 * `authorization: Bearer <token>` on every call of the channel, the raw streams' included. The
 * file is read again when it changes, so a rotated token (a mounted secret) is picked up.
 */
function bearerToken(file: string): grpc.CallCredentials {
  let read = { mtimeMs: -1, token: '' };
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    try {
      const { mtimeMs } = fs.statSync(file);
      if (mtimeMs !== read.mtimeMs) read = { mtimeMs, token: fs.readFileSync(file, 'utf8').trim() };
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${read.token}`);
      callback(null, metadata);
    } catch (err) {
      callback(new Error(`cannot read the token file ${file}: ${(err as Error).message}`));
    }
  });
}

/** Only the TLS fields (and the token) of a config, to hand on to the channels a service opens. */
export function tlsSettings(config: TlsSettings): TlsSettings {
  const { tlsCa, tlsCert, tlsKey, authTokenFile } = config;
  return { tlsCa, tlsCert, tlsKey, authTokenFile };
}

let quieted = false;

/**
 * grpc-js names the server by its address, and Node warns (DEP0123) when that is an IP address;
 * the certificate is still checked against the address (an IP SAN), so the warning says nothing
 * to a dsat user and would land in the logs as a stray line.
 */
function quietIpServerNameWarning(): void {
  if (quieted) return;
  quieted = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const options = args[1];
    const code =
      typeof options === 'object' && options !== null
        ? (options as { code?: string }).code
        : args[2];
    if (code !== 'DEP0123') emit(...args);
  }) as typeof process.emitWarning;
}
