/**
 * This host's own TLS files (certificate, key, CA bundle), read and checked before they are used: the key
 * matches the certificate, the CA issued it, it is valid now, it may be used for the role, and it names this
 * host (one URI SAN, SPIFFE-style). What fails here fails at start with a coded error, not at a peer's refusal.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { FerryError } from '../errors/ferry-error.js';
import { identityFromSubjectAltName, type PeerIdentity } from './peer-identity.js';

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

/** Which handshakes the certificate serves: an agent's server side, a dialer, or both (the source agent). */
export type TlsRole = 'client' | 'server';

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
  readonly identity: PeerIdentity;
  readonly serial: string;
  readonly notAfter: Date;
}

const EKU = { server: '1.3.6.1.5.5.7.3.1', client: '1.3.6.1.5.5.7.3.2' } as const;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function invalid(files: TlsFiles, detail: string): FerryError {
  return new FerryError('TLS_CONFIG_INVALID', { detail: `${detail} (certificate ${files.certFile}, key ${files.keyFile}, CA ${files.caFile})` });
}

function unreadable(what: string, path: string, e: unknown): FerryError {
  const code = (e as NodeJS.ErrnoException).code ?? String(e);
  return new FerryError('TLS_FILES_MISSING', { message: `The TLS ${what} ${path} cannot be read (${code})` });
}

function parseCerts(pem: Buffer, what: string, files: TlsFiles): X509Certificate[] {
  const blocks = pem.toString('utf8').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw invalid(files, `the ${what} holds no PEM certificate`);
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (e) {
    throw invalid(files, `the ${what} cannot be parsed: ${(e as Error).message}`);
  }
}

/** Checks the three files' contents; `keyMode` is the key file's permission bits. */
export function checkTlsMaterial(files: TlsFiles, raw: { cert: Buffer; key: Buffer; ca: Buffer; keyMode: number }, roles: readonly TlsRole[], now = new Date()): TlsMaterial {
  // Group read is allowed (a `ferry` group may run the agents); anything for others, or group write, is not.
  if ((raw.keyMode & 0o037) !== 0) {
    throw invalid(files, `the key file is open to others (mode ${(raw.keyMode & 0o777).toString(8)}): chmod 600 ${files.keyFile}`);
  }
  const [leaf, ...chain] = parseCerts(raw.cert, 'certificate file', files);
  const cas = parseCerts(raw.ca, 'CA file', files);
  if (cas.some((c) => !c.ca)) throw invalid(files, 'the CA file holds a certificate that is not a CA');
  let key;
  try {
    key = createPrivateKey(raw.key);
  } catch (e) {
    throw invalid(files, `the key cannot be parsed: ${(e as Error).message}`);
  }
  if (!leaf!.checkPrivateKey(key)) throw invalid(files, 'the key does not belong to the certificate');
  const from = new Date(leaf!.validFrom);
  const to = new Date(leaf!.validTo);
  if (now < from) throw invalid(files, `the certificate is not valid before ${from.toISOString()}`);
  if (now > to) throw invalid(files, `the certificate expired at ${to.toISOString()}`);
  const issuer = [...chain, ...cas].find((c) => leaf!.checkIssued(c) && leaf!.verify(c.publicKey));
  if (!issuer) throw invalid(files, `the certificate (issuer "${leaf!.issuer.replace(/\n/g, ', ')}") was not issued by the CA file's CA`);
  const usage = leaf!.keyUsage as string[] | undefined; // Node names the extended key usage OIDs so
  for (const role of roles) {
    if (usage && !usage.includes(EKU[role])) throw invalid(files, `the certificate may not be used as a TLS ${role} (extended key usage ${usage.join(',')})`);
  }
  const id = identityFromSubjectAltName(leaf!.subjectAltName);
  if (!id.ok) throw invalid(files, `the certificate names no identity: ${id.problem}`);
  return { cert: raw.cert, key: raw.key, ca: raw.ca, identity: id.identity, serial: leaf!.serialNumber, notAfter: to };
}

/** Reads and checks the files now (at start: a daemon refuses to start on bad files). */
export function loadTlsMaterial(files: TlsFiles, roles: readonly TlsRole[]): TlsMaterial {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw unreadable(what, path, e);
    }
  };
  const cert = read('certificate', files.certFile);
  const key = read('key', files.keyFile);
  const ca = read('CA', files.caFile);
  return checkTlsMaterial(files, { cert, key, ca, keyMode: statSync(files.keyFile).mode }, roles);
}

/** The same, without blocking: what the rotation reads every refresh. */
export async function readTlsMaterial(files: TlsFiles, roles: readonly TlsRole[]): Promise<TlsMaterial> {
  const read = (what: string, path: string): Promise<Buffer> => readFile(path).catch((e: unknown) => Promise.reject(unreadable(what, path, e)));
  const [cert, key, ca, keyStat] = await Promise.all([read('certificate', files.certFile), read('key', files.keyFile), read('CA', files.caFile), stat(files.keyFile)]);
  return checkTlsMaterial(files, { cert, key, ca, keyMode: keyStat.mode }, roles);
}
