/**
 * Who may call an agent: a server interceptor that runs on every call before any handler sees it. The caller's
 * certificate must have been verified by this agent's CA during the handshake (the call's auth context holds it
 * only then), name one identity, be on the allow-list, and pass the agent's own rule (`authorize`, e.g. the
 * dest's check of the source). Anything else ends the call with a coded FerryError in the ferry-error-bin
 * trailer (UNAUTHENTICATED / PERMISSION_DENIED from the registry), without reading a message.
 */
import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import { FerryError } from '../errors/ferry-error.js';
import { toStatus } from '../errors/grpc-status.js';
import type { Side } from '../phases.js';
import type { PeerAllowList } from './peer-allow-list.js';
import { clip, describeIdentity, identityFromSubjectAltName, type PeerIdentity } from './peer-identity.js';

/** The agent's own rule after the allow-list; returns the refusal, or undefined to let the call through. */
export type AuthorizePeer = (peer: PeerIdentity, method: string) => FerryError | undefined;

export interface PeerRefusal {
  error: FerryError;
  method: string;
  /** The caller's address (grpc-js `getPeer()`). */
  address: string;
  /** What the certificate named, when it was verified. */
  identity: string | undefined;
}

export interface PeerAuthorizationOptions {
  allowList: PeerAllowList;
  /** This agent's side, for the errors it sends. */
  side: Side;
  authorize?: AuthorizePeer | undefined;
  onRefused: (refusal: PeerRefusal) => void;
}

/** Decides one call from its auth context: the refusal, or the caller's identity. */
export function authorizeCall(
  auth: { sslPeerCertificate?: PeerCertificate | undefined } | null,
  method: string,
  o: Omit<PeerAuthorizationOptions, 'onRefused'>,
): { ok: true; identity: PeerIdentity } | { ok: false; error: FerryError; identity?: string } {
  const cert = auth?.sslPeerCertificate;
  if (!cert) {
    return {
      ok: false,
      error: new FerryError('CERT_REFUSED_BY_PEER', {
        side: o.side,
        phase: 'negotiate',
        message: `The ${o.side} agent accepts only callers with a certificate its CA verifies; this call had none that verified (absent, another CA's, expired or not yet valid)`,
      }),
    };
  }
  const id = identityFromSubjectAltName(cert.subjectaltname);
  if (!id.ok) return { ok: false, error: new FerryError('PEER_IDENTITY_INVALID', { side: o.side, phase: 'negotiate', detail: `the caller's certificate: ${id.problem}` }) };
  const name = clip(describeIdentity(id.identity));
  if (!o.allowList.allows(id.identity)) {
    return {
      ok: false,
      identity: name,
      error: new FerryError('PEER_NOT_ALLOWED', { side: o.side, phase: 'negotiate', message: `The ${o.side} agent does not accept calls from ${name}: it is not on its allow-list` }),
    };
  }
  const refused = o.authorize?.(id.identity, method);
  if (refused) return { ok: false, error: refused, identity: name };
  return { ok: true, identity: id.identity };
}

export function peerAuthorizationInterceptor(o: PeerAuthorizationOptions): grpc.ServerInterceptor {
  return (descriptor, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          // Metadata comes first on every call kind: holding it back keeps the handler from ever starting.
          onReceiveMetadata: (metadata, pass) => {
            const verdict = authorizeCall(call.getAuthContext(), descriptor.path, o);
            if (verdict.ok) {
              pass(metadata);
              return;
            }
            o.onRefused({ error: verdict.error, method: descriptor.path, address: call.getPeer(), identity: verdict.identity });
            call.sendStatus(toStatus(verdict.error) as Parameters<typeof call.sendStatus>[0]);
          },
        });
      },
    });
}
