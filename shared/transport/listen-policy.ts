/**
 * Where an agent may listen: anywhere with mutual TLS; in plaintext (--insecure) on loopback only, unless the
 * operator also said --insecure-any-address. No security given (a local-only server) means loopback only.
 */
import { FerryError } from '../errors/ferry-error.js';
import { formatHostPort, isLoopback, type HostPort } from './address.js';
import type { TransportSecurity } from './transport-security.js';

/** Refuses, before anything starts, a plaintext listener beyond loopback that the operator did not ask for. */
export function checkListenPolicy(listen: HostPort, security?: TransportSecurity): void {
  if (security?.kind === 'tls' || isLoopback(listen.host)) return;
  if (security?.kind === 'insecure' && security.anyAddress) return;
  throw new FerryError('INSECURE_LISTEN_REFUSED', {
    detail: `asked to listen on ${formatHostPort(listen)} in plaintext${security ? ' without --insecure-any-address' : ' (this server is loopback-only)'}`,
  });
}
