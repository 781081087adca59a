/**
 * Who a call comes from, for the per-peer bounds and for the ownership of a session (only the peer that
 * opened a session may act on it). With mutual TLS: the verified identity of its certificate. In plaintext
 * (--insecure, loopback or a named test network): its address without the port, so every connection of one
 * client counts as the same peer.
 */
import type { PeerCertificate } from 'node:tls';
import { describeIdentity, verifiedPeerIdentity } from '../shared/transport/peer-identity.js';

export type PeerKey = string;

interface Call {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } | null;
}

/** grpc-js says `ADDRESS:PORT` (IPv6 unbracketed, e.g. `::1:41234`) for TCP, `unknown` otherwise: the port goes. */
export function peerKey(call: Call): PeerKey {
  const identity = verifiedPeerIdentity(call);
  if (identity) return `tls:${describeIdentity(identity)}`;
  return call.getPeer().replace(/:\d+$/, '');
}
