/**
 * Why a channel did not connect, in a coded error rather than grpc-js's "Failed to connect before the
 * deadline": one TLS handshake of our own to the same address, with the same files and the same checks, tells a
 * dest whose certificate another CA issued or that expired (PEER_CERT_UNTRUSTED), one not valid for the address
 * (PEER_ADDRESS_MISMATCH) or not on the allow-list (PEER_NOT_ALLOWED), and a peer that speaks plaintext where TLS
 * was expected or the reverse (TRANSPORT_MISMATCH). Runs only after a failure; it sends no gRPC call.
 */
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { isIP } from 'node:net';
import { FerryError } from '../errors/ferry-error.js';
import type { HostPort } from './address.js';
import { formatHostPort } from './address.js';
import { checkDestCertificate } from './credentials.js';
import { clip } from './peer-identity.js';
import { readTlsMaterial } from './tls-material.js';
import type { TransportSecurity } from './transport-security.js';

/** OpenSSL's verdicts on a certificate chain (Node puts them in `err.code`). */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_PURPOSE',
  'CERT_REVOKED',
]);
/** What OpenSSL says when the other end does not speak TLS. */
const NOT_TLS = /wrong version number|packet length too long|unknown protocol|http request|record layer failure/i;

type Outcome = { kind: 'secure'; socket: TLSSocket } | { kind: 'error'; error: Error & { code?: string } } | { kind: 'timeout' };

function handshake(options: ConnectionOptions, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = tlsConnect(options);
    const done = (o: Outcome): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => undefined); // late errors of a socket we are closing
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    socket.once('secureConnect', () => done({ kind: 'secure', socket }));
    socket.once('error', (error) => done({ kind: 'error', error }));
  });
}

/** A coded explanation of a failed connect to `target`, or undefined when the handshake itself is fine. */
export async function diagnoseHandshake(target: HostPort, security: TransportSecurity, timeoutMs = 3_000): Promise<FerryError | undefined> {
  const at = formatHostPort(target);
  const base = { host: target.host, port: target.port, ALPNProtocols: ['h2'], servername: isIP(target.host) ? undefined : target.host };
  if (security.kind === 'insecure') {
    // Plaintext was refused: does the other end answer a TLS handshake?
    const r = await handshake({ ...base, rejectUnauthorized: false }, timeoutMs);
    if (r.kind !== 'secure') return undefined;
    return new FerryError('TRANSPORT_MISMATCH', { side: 'dest', phase: 'negotiate', message: `${at} speaks TLS, and this side dialed it in plaintext (--insecure)` });
  }
  let material;
  try {
    material = await readTlsMaterial(security.files, security.roles);
  } catch {
    material = security.material; // the files changed since the start: diagnose with what the channel used
  }
  let refusal: FerryError | undefined;
  const r = await handshake(
    {
      ...base,
      ca: material.ca,
      cert: material.cert,
      key: material.key,
      checkServerIdentity: (_name, cert) => (refusal = checkDestCertificate(target.host, cert, security.allowList)),
    },
    timeoutMs,
  );
  if (r.kind !== 'error') return undefined;
  if (refusal) return refusal;
  const { error } = r;
  const code = error.code ?? '';
  if (UNTRUSTED.has(code)) {
    return new FerryError('PEER_CERT_UNTRUSTED', {
      side: 'dest',
      phase: 'negotiate',
      message: `The certificate of ${at} did not verify against this host's CA (${code})`,
      detail: `${clip(error.message, 300)}; CA file ${security.files.caFile}`,
    });
  }
  if (NOT_TLS.test(error.message)) {
    return new FerryError('TRANSPORT_MISMATCH', { side: 'dest', phase: 'negotiate', message: `${at} does not speak TLS (a dest started with --insecure?)`, detail: clip(error.message, 300) });
  }
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /SSL|TLS|alert/.test(error.message)) {
    return new FerryError('TLS_HANDSHAKE_FAILED', { side: 'dest', phase: 'negotiate', detail: `${at}: ${clip(error.message, 300)}` });
  }
  return undefined; // not TLS: the caller's DEST_UNREACHABLE says it
}
