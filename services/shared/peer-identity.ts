import * as grpc from '@grpc/grpc-js';

/**
 * The SPIFFE id (`spiffe://…` URI SAN) of the client certificate a call came with, under mTLS,
 * handed to handlers as this metadata key. A client cannot set it: any value it sends is removed.
 */
export const PEER_IDENTITY = 'dsat-peer-spiffe-id';

/** The worker id a certificate with `spiffe://<trust domain>/worker/<id>` may claim. */
export function workerIdOf(spiffeId: string | undefined): string | undefined {
  return spiffeId === undefined
    ? undefined
    : /^spiffe:\/\/[^/]+\/worker\/([^/]+)$/.exec(spiffeId)?.[1];
}

function spiffeIdOf(call: grpc.ServerInterceptingCallInterface): string | undefined {
  const san = call.getAuthContext().sslPeerCertificate?.subjectaltname ?? '';
  return /(?:^|,\s*)URI:(spiffe:\/\/[^,\s]+)/.exec(san)?.[1];
}

/** A grpc-js server interceptor: only installed with client certificates, so free otherwise. */
export const peerIdentityInterceptor: grpc.ServerInterceptor = (_method, call) =>
  new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, forward) => {
          metadata.remove(PEER_IDENTITY);
          const id = spiffeIdOf(call);
          if (id !== undefined) metadata.set(PEER_IDENTITY, id);
          forward(metadata);
        },
      }),
  });
