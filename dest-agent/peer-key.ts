/**
 * Who a call comes from, for the per-peer bounds. Today the peer's address without its port (a client's every
 * connection counts as the same peer); with mutual TLS, the verified identity of its certificate replaces it
 * here, and only here.
 */

export type PeerKey = string;

/** grpc-js says `ADDRESS:PORT` (IPv6 unbracketed, e.g. `::1:41234`) for TCP, `unknown` otherwise: the port goes. */
export function peerKey(call: { getPeer(): string }): PeerKey {
  return call.getPeer().replace(/:\d+$/, '');
}
