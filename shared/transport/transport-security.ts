/**
 * How an agent or a dialer secures its gRPC channels, compiled once from the flags and the environment:
 * mutual TLS (the default) with this host's files and the peers' allow-list, or plaintext, only when asked for
 * with --insecure (and beyond loopback only with --insecure-any-address as well).
 */
import { join } from 'node:path';
import { FerryError } from '../errors/ferry-error.js';
import { PeerAllowList } from './peer-allow-list.js';
import { loadTlsMaterial, type TlsFiles, type TlsMaterial, type TlsRole } from './tls-material.js';

export const DEFAULT_TLS_DIR = '/etc/ferry/tls';
/** How often the files are read again: a renewed certificate is served without a restart. */
export const DEFAULT_TLS_REFRESH_MS = 60_000;

export interface TransportSecurityOptions {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  caFile?: string | undefined;
  /** --allow-peer entries; none = every host of this host's own trust domain (dialers only: a server must name its peers). */
  allowPeers?: readonly string[] | undefined;
  insecure?: boolean | undefined;
  insecureAnyAddress?: boolean | undefined;
  refreshIntervalMs?: number | undefined;
}

export interface TlsSecurity {
  readonly kind: 'tls';
  readonly files: TlsFiles;
  readonly roles: readonly TlsRole[];
  /** As read at compile time: this host's identity, and what is served until the first refresh. */
  readonly material: TlsMaterial;
  readonly allowList: PeerAllowList;
  readonly refreshIntervalMs: number;
}

export interface PlaintextSecurity {
  readonly kind: 'insecure';
  /** Listening beyond loopback was asked for explicitly (--insecure-any-address). */
  readonly anyAddress: boolean;
}

export type TransportSecurity = TlsSecurity | PlaintextSecurity;

/** Plaintext on loopback: tests of a service's logic, never an operator's default. */
export const INSECURE_LOOPBACK: PlaintextSecurity = { kind: 'insecure', anyAddress: false };

export function tlsFilesFrom(o: TransportSecurityOptions, env: NodeJS.ProcessEnv = process.env): TlsFiles {
  const dir = env.FERRY_TLS_DIR || DEFAULT_TLS_DIR;
  return { certFile: o.certFile ?? join(dir, 'cert.pem'), keyFile: o.keyFile ?? join(dir, 'key.pem'), caFile: o.caFile ?? join(dir, 'ca.pem') };
}

export function compileTransportSecurity(o: TransportSecurityOptions, roles: readonly TlsRole[], env: NodeJS.ProcessEnv = process.env): TransportSecurity {
  if (o.insecureAnyAddress && !o.insecure) {
    throw new FerryError('BAD_ARGUMENT', { message: '--insecure-any-address needs --insecure', hint: 'Plaintext is never implied: give both flags, on an isolated test network only.' });
  }
  if (o.insecure) {
    const tlsFlag = o.certFile ?? o.keyFile ?? o.caFile ?? o.allowPeers?.[0];
    if (tlsFlag !== undefined) {
      throw new FerryError('BAD_ARGUMENT', { message: '--insecure turns TLS off, but TLS flags were given too', hint: 'Drop --insecure (TLS is the default), or drop --tls-cert, --tls-key, --tls-ca and --allow-peer.' });
    }
    return { kind: 'insecure', anyAddress: o.insecureAnyAddress === true };
  }
  const refreshIntervalMs = o.refreshIntervalMs ?? DEFAULT_TLS_REFRESH_MS;
  if (!Number.isInteger(refreshIntervalMs) || refreshIntervalMs < 10 || refreshIntervalMs > 86_400_000) {
    throw new FerryError('BAD_ARGUMENT', { message: `the TLS refresh interval must be from 10 ms to 24 h (got ${refreshIntervalMs})` });
  }
  const files = tlsFilesFrom(o, env);
  const material = loadTlsMaterial(files, roles);
  // A server decides who may drive it as root: it names its peers; the whole trust domain (every host, dests
  // included, that the CA ever certified) is no default for that.
  if (roles.includes('server') && !(o.allowPeers && o.allowPeers.length > 0)) {
    throw new FerryError('BAD_ARGUMENT', {
      message: 'A listening agent needs --allow-peer: the sources it accepts',
      hint: 'Name each source: --allow-peer spiffe://TRUST-DOMAIN/ferry/HOST (repeatable), or spiffe://TRUST-DOMAIN/ferry/* to accept every host of the domain knowingly.',
    });
  }
  let allowList: PeerAllowList;
  if (o.allowPeers && o.allowPeers.length > 0) allowList = PeerAllowList.parse(o.allowPeers);
  else if (material.identity.spiffe) allowList = PeerAllowList.trustDomain(material.identity.spiffe.trustDomain);
  else {
    throw new FerryError('BAD_ARGUMENT', {
      message: `This host's certificate has no SPIFFE ID, so there is no trust domain to allow by default`,
      hint: 'Name the peers with --allow-peer (a DNS name or spiffe://TRUST-DOMAIN/ferry/HOST), or issue a certificate with `ferry certs issue`.',
    });
  }
  return { kind: 'tls', files, roles, material, allowList, refreshIntervalMs };
}

/** What a dialer uses when no flags reach it (the source agent daemon today): TLS from the default files. */
export function defaultClientSecurity(): TransportSecurity {
  return compileTransportSecurity({}, ['client']);
}
