/**
 * The one place gRPC credentials are made, for both agents and the CLI: mutual TLS from the compiled
 * TransportSecurity (certificates rotate in place, certificate-rotation.ts), or plaintext when the operator
 * asked for it with --insecure.
 *
 * The client checks the server in checkServerIdentity: its certificate must be valid for the address dialed
 * (the usual host name check) and name an identity on the client's allow-list. The server asks for a client
 * certificate and verifies it against its CA, but does not end the handshake when there is none or it does not
 * verify: the peer-authorization interceptor then refuses every call with a coded error (the caller sees why, and
 * the agent logs and counts it), before any handler runs.
 */
import * as grpc from '@grpc/grpc-js';
import { checkServerIdentity as checkHostName, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import { isIP } from 'node:net';
import { FerryError } from '../errors/ferry-error.js';
import type { Logger } from '../logging/logger.js';
import type { HostPort } from './address.js';
import { RotatingCertificateProvider } from './certificate-rotation.js';
import type { PeerAllowList } from './peer-allow-list.js';
import { clip, describeIdentity, identityFromSubjectAltName } from './peer-identity.js';
import { loadTlsMaterial } from './tls-material.js';
import type { TlsSecurity, TransportSecurity } from './transport-security.js';

export interface ClientTransport {
  credentials: grpc.ChannelCredentials;
  /** Channel options the credentials need (merged over CHANNEL_OPTIONS). */
  options: grpc.ChannelOptions;
}

/** Server Name Indication sent when the dialed host is an IP address (RFC 6066 allows no IP there). */
const SNI_FOR_IP = 'ferry-agent';

/**
 * Why the certificate a server presented is not the one expected at `dialed`: not valid for that address,
 * naming no identity, or an identity not on the allow-list. Undefined when it is.
 */
export function checkDestCertificate(dialed: string, cert: PeerCertificate, allowList: PeerAllowList): FerryError | undefined {
  const nameError = checkHostName(dialed, cert);
  if (nameError) {
    return new FerryError('PEER_ADDRESS_MISMATCH', { side: 'dest', phase: 'negotiate', detail: clip(nameError.message, 600) });
  }
  const id = identityFromSubjectAltName(cert.subjectaltname);
  if (!id.ok) return new FerryError('PEER_IDENTITY_INVALID', { side: 'dest', phase: 'negotiate', detail: `the certificate of ${dialed}: ${id.problem}` });
  if (!allowList.allows(id.identity)) {
    return new FerryError('PEER_NOT_ALLOWED', {
      side: 'source',
      phase: 'negotiate',
      message: `The dest at ${dialed} is ${clip(describeIdentity(id.identity))}, which this host's allow-list does not name`,
      detail: `allowed: ${clip(allowList.toString(), 600)}`,
    });
  }
  return undefined;
}

/** Credentials for a channel to `target`. */
/**
 * A dialer's channel starts from the files as they are now, not as they were when the command (or a
 * long-running source agent) started: a renewed certificate is used by the next connection. Files that do
 * not pass (or name another host) are not taken; the previous material stays, and the log says why.
 */
function withMaterialOnDisk(security: TlsSecurity, log?: Logger): TlsSecurity {
  try {
    const material = loadTlsMaterial(security.files, security.roles);
    if (describeIdentity(material.identity) !== describeIdentity(security.material.identity)) throw new Error(`the certificate on disk names ${describeIdentity(material.identity)}`);
    return material.cert.equals(security.material.cert) ? security : { ...security, material };
  } catch (e) {
    log?.warn('TLS files on disk not taken; dialing with the certificate read before', { problem: e instanceof Error ? e.message : String(e) });
    return security;
  }
}

/** A local Unix socket (the source agent's): its file mode and SO_PEERCRED authenticate, not TLS. */
export function localSocketCredentials(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}

export function clientCredentials(security: TransportSecurity, target: HostPort, log?: Logger): ClientTransport {
  if (security.kind === 'insecure') return { credentials: grpc.credentials.createInsecure(), options: {} };
  const provider = new RotatingCertificateProvider(withMaterialOnDisk(security, log), log);
  const credentials = grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    // grpc-js hands over the SNI name; the check is against what was dialed, which this closure knows.
    checkServerIdentity: (_sni, cert) => checkDestCertificate(target.host, cert, security.allowList),
  });
  return { credentials, options: isIP(target.host) ? { 'grpc.ssl_target_name_override': SNI_FOR_IP } : {} };
}

/**
 * node:tls options for a page channel to the dest at `target` (docs/protocol.md, "Page channels"): this host's
 * certificate as on disk now, and the same check of the dest's certificate as the gRPC channel's.
 */
export function tlsClientOptions(security: TlsSecurity, target: HostPort, log?: Logger): ConnectionOptions {
  const m = withMaterialOnDisk(security, log).material;
  return {
    key: m.key,
    cert: m.cert,
    ca: m.ca,
    minVersion: 'TLSv1.3',
    servername: isIP(target.host) ? SNI_FOR_IP : target.host,
    checkServerIdentity: (_sni, cert) => checkDestCertificate(target.host, cert, security.allowList),
  };
}

/**
 * Credentials for an agent's listener, with the interceptors that must see every call (the peer authorization).
 * TLS asks every client for its certificate; see the header for why the handshake itself does not refuse.
 */
export function serverCredentials(security: TransportSecurity, interceptors: grpc.ServerInterceptor[] = [], log?: Logger): grpc.ServerCredentials {
  let base: grpc.ServerCredentials;
  if (security.kind === 'insecure') base = grpc.ServerCredentials.createInsecure();
  else {
    const provider = new RotatingCertificateProvider(security, log);
    // One provider for both roles: grpc-js 1.14's factory passes its two provider arguments swapped.
    base = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
  }
  return interceptors.length > 0 ? grpc.experimental.createServerCredentialsWithInterceptors(base, interceptors) : base;
}
