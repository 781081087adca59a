/** The transport security flags, shared by the commands that listen (agents) and those that dial one. */
import { FerryError } from '../shared/errors/ferry-error.js';
import { compileTransportSecurity, type TransportSecurity } from '../shared/transport/transport-security.js';
import type { TlsRole } from '../shared/transport/tls-material.js';

/** For every command that talks to an agent. */
export const TLS_FLAGS = {
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'allow-peer': { type: 'string', multiple: true },
  insecure: { type: 'boolean' },
} as const;

/** Only for the commands that listen. */
export const LISTEN_SECURITY_FLAGS = {
  'insecure-any-address': { type: 'boolean' },
  // Refused with a pointer to its replacement, rather than silently meaning plaintext as it used to.
  'insecure-listen': { type: 'string' },
} as const;

export interface TlsFlagValues {
  'tls-cert'?: string | undefined;
  'tls-key'?: string | undefined;
  'tls-ca'?: string | undefined;
  'allow-peer'?: readonly string[] | undefined;
  insecure?: boolean | undefined;
  'insecure-any-address'?: boolean | undefined;
  'insecure-listen'?: string | undefined;
}

export function tlsHelp(peer: 'source' | 'dest', listens: boolean): string {
  const lines = [
    'Transport security: mutual TLS unless --insecure. The files default to /etc/ferry/tls/{cert,key,ca}.pem',
    '($FERRY_TLS_DIR names another directory):',
    "  --tls-cert FILE         this host's certificate (`ferry certs issue` makes one)",
    "  --tls-key FILE          its private key (mode 0600)",
    '  --tls-ca FILE           the CA that issued the agents\' certificates',
    `  --allow-peer ID         a ${peer} this host accepts, repeatable: spiffe://TD/ferry/HOST, spiffe://TD/ferry/*`,
    `                          or a DNS name (default: every host of this host's own trust domain)`,
    listens
      ? '  --insecure              plaintext, no authentication: loopback only, for tests'
      : '  --insecure              dial in plaintext (the agent must run with --insecure too)',
  ];
  if (listens) lines.push('  --insecure-any-address  with --insecure: listen beyond loopback (isolated test networks only)');
  return lines.join('\n');
}

/** Compiles the flags; `roles` are the handshakes this command's certificate takes part in. */
export function transportSecurityFromFlags(values: TlsFlagValues, roles: readonly TlsRole[]): TransportSecurity {
  if (values['insecure-listen'] !== undefined) {
    throw new FerryError('BAD_ARGUMENT', {
      message: '--insecure-listen was replaced: the agents speak mutual TLS by default',
      hint: 'Give the agent its certificate (--tls-cert, --tls-key, --tls-ca; `ferry certs` makes them); for plaintext on an isolated test network use --insecure --insecure-any-address.',
    });
  }
  return compileTransportSecurity(
    {
      certFile: values['tls-cert'],
      keyFile: values['tls-key'],
      caFile: values['tls-ca'],
      allowPeers: values['allow-peer'],
      insecure: values.insecure,
      insecureAnyAddress: values['insecure-any-address'],
    },
    roles,
  );
}

/** The loud line a dialing command prints when it goes plaintext (its logger is silent by default). */
export function warnIfPlaintext(security: TransportSecurity): void {
  if (security.kind === 'insecure') console.error('ferry: WARNING: --insecure: plaintext, neither side is authenticated');
}
