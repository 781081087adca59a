/**
 * A small CA for the agents, driven through openssl (`ferry certs init|issue`, the demo, the tests): a CA for
 * one trust domain, and host certificates it signs with the URI SAN spiffe://TD/ferry/HOST, DNS and IP SANs,
 * and both TLS usages (an agent serves and dials). Keys are P-256, written 0600 in a 0700 directory; files
 * are written beside their final name and renamed into place, so an agent that re-reads them (rotation) sees
 * an old or a new file, never half of one.
 *
 * Layout: DIR/ca.pem, DIR/ca.key; a host's files in DIR/hosts/HOST/{cert,key,ca}.pem unless told otherwise,
 * which is what an agent reads from /etc/ferry/tls (or $FERRY_TLS_DIR).
 */
import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../errors/ferry-error.js';
import { isDnsName, isHostSegment, isTrustDomain, parseSubjectAltName, spiffeIdFor } from './peer-identity.js';

const execFileAsync = promisify(execFile);
const OPENSSL_TIMEOUT_MS = 30_000;
const DAY_MS = 86_400_000;

export interface CaInitOptions {
  dir: string;
  trustDomain: string;
  days?: number | undefined;
}

export interface IssueOptions {
  /** The CA's directory (made by initCertificateAuthority). */
  dir: string;
  host: string;
  dnsNames?: readonly string[] | undefined;
  ipAddresses?: readonly string[] | undefined;
  /** Where cert.pem, key.pem and ca.pem go; default DIR/hosts/HOST. */
  out?: string | undefined;
  days?: number | undefined;
  /** Explicit validity (tests make expired and future certificates); overrides `days`. */
  notBefore?: Date | undefined;
  notAfter?: Date | undefined;
  /** Tests only: more URI SANs after the SPIFFE ID (a certificate SPIFFE forbids). */
  extraUris?: readonly string[] | undefined;
  /** Tests only: no SPIFFE ID at all (DNS and IP SANs only). */
  noSpiffeId?: boolean | undefined;
}

export interface IssuedCertificate {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** spiffe://TD/ferry/HOST, or undefined with `noSpiffeId`. */
  identity: string | undefined;
}

async function openssl(args: string[], cwd?: string): Promise<void> {
  try {
    await execFileAsync('openssl', args, { timeout: OPENSSL_TIMEOUT_MS, cwd });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    const why = err.code === 'ENOENT' ? 'openssl is not installed' : (err.stderr?.trim().split('\n').slice(-4).join('\n') ?? err.message);
    throw new FerryError('CERTIFICATE_ISSUE_FAILED', { detail: `openssl ${args[0]}: ${why}` });
  }
}

function checkDays(days: number | undefined, dflt: number): number {
  const d = days ?? dflt;
  if (!Number.isInteger(d) || d < 1 || d > 36_500) throw new FerryError('BAD_ARGUMENT', { message: `--days must be a whole number from 1 to 36500 (got ${d})` });
  return d;
}

/** openssl's GeneralizedTime, YYYYMMDDHHMMSSZ. */
function asn1Time(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Copies `from` to `path` with `mode` (never wider, even for a moment), through a temporary name beside it. */
function install(path: string, mode: number, from: string): void {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, readFileSync(from), { mode, flag: 'wx' });
  chmodSync(tmp, mode); // the umask may have narrowed it further; make it exactly `mode`
  renameSync(tmp, path);
}

function caPaths(dir: string): { cert: string; key: string } {
  return { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
}

/** The trust domain a CA made here stands for: its own URI SAN spiffe://TD. */
export function trustDomainOfCa(caCertFile: string): string {
  let san: string | undefined;
  try {
    san = new X509Certificate(readFileSync(caCertFile)).subjectAltName;
  } catch (e) {
    throw new FerryError('TLS_FILES_MISSING', { message: `The CA certificate ${caCertFile} cannot be read (${(e as Error).message})`, hint: 'Make the CA first: ferry certs init --dir DIR --trust-domain TD' });
  }
  const uri = parseSubjectAltName(san ?? '')?.find((e) => e.type === 'URI')?.value;
  const td = uri?.startsWith('spiffe://') ? uri.slice('spiffe://'.length) : '';
  if (!isTrustDomain(td)) throw new FerryError('TLS_CONFIG_INVALID', { detail: `${caCertFile} carries no URI SAN spiffe://TRUST-DOMAIN: it was not made by ferry certs init` });
  return td;
}

export async function initCertificateAuthority(o: CaInitOptions): Promise<{ certFile: string; keyFile: string }> {
  if (!isTrustDomain(o.trustDomain)) {
    throw new FerryError('BAD_ARGUMENT', { message: `--trust-domain "${o.trustDomain}" is not a trust domain`, hint: 'Use lower-case letters, digits, dots, dashes and underscores, e.g. ferry.example.' });
  }
  const days = checkDays(o.days, 3650);
  const paths = caPaths(o.dir);
  if (existsSync(paths.cert) || existsSync(paths.key)) {
    throw new FerryError('BAD_ARGUMENT', { message: `${o.dir} already holds a CA`, hint: 'Issue host certificates from it with `ferry certs issue`, or choose another --dir.' });
  }
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const work = mkdtempSync(join(tmpdir(), 'ferry-certs-'));
  try {
    await openssl([
      'req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', join(work, 'ca.key'), '-out', join(work, 'ca.pem'), '-days', String(days),
      '-subj', `/O=Ferry/CN=Ferry CA ${o.trustDomain}`,
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', `subjectAltName=URI:spiffe://${o.trustDomain}`,
    ]);
    install(paths.key, 0o600, join(work, 'ca.key'));
    install(paths.cert, 0o644, join(work, 'ca.pem'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { certFile: paths.cert, keyFile: paths.key };
}

export async function issueHostCertificate(o: IssueOptions): Promise<IssuedCertificate> {
  if (!isHostSegment(o.host)) {
    throw new FerryError('BAD_ARGUMENT', { message: `--host "${o.host}" is not a host name`, hint: 'Use letters, digits, dots, dashes and underscores: it becomes spiffe://TD/ferry/HOST.' });
  }
  const dns = (o.dnsNames ?? []).map((n) => n.toLowerCase());
  const bad = dns.find((n) => !isDnsName(n) || isIP(n) !== 0) ?? (o.ipAddresses ?? []).find((a) => isIP(a) === 0);
  if (bad !== undefined) throw new FerryError('BAD_ARGUMENT', { message: `"${bad}" is not a ${dns.includes(bad) ? 'DNS name (use --ip for an address)' : 'IP address'}` });
  const ca = caPaths(o.dir);
  const trustDomain = trustDomainOfCa(ca.cert);
  const identity = o.noSpiffeId ? undefined : spiffeIdFor(trustDomain, o.host);
  if (isDnsName(o.host.toLowerCase()) && !dns.includes(o.host.toLowerCase())) dns.unshift(o.host.toLowerCase());
  const san = [
    ...(identity ? [`URI:${identity}`] : []),
    ...(o.extraUris ?? []).map((u) => `URI:${u}`),
    ...dns.map((n) => `DNS:${n}`),
    ...(o.ipAddresses ?? []).map((a) => `IP:${a}`),
  ];
  const notBefore = o.notBefore ?? new Date(Date.now() - 60_000); // a minute of slack for clocks a little apart
  const notAfter = o.notAfter ?? new Date(notBefore.getTime() + checkDays(o.days, 365) * DAY_MS);
  const out = o.out ?? join(o.dir, 'hosts', o.host);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const work = mkdtempSync(join(tmpdir(), 'ferry-certs-'));
  try {
    writeFileSync(join(work, 'index.txt'), '');
    writeFileSync(
      join(work, 'openssl.cnf'),
      [
        '[ca]', 'default_ca = ferry',
        // -rand_serial draws the serial; openssl still wants a serial file named.
        '[ferry]', `database = ${join(work, 'index.txt')}`, `serial = ${join(work, 'serial')}`, `new_certs_dir = ${work}`, 'default_md = sha256',
        'policy = any', 'unique_subject = no', 'copy_extensions = none', 'email_in_dn = no',
        '[any]', 'commonName = supplied', 'organizationName = optional',
        '[host]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature',
        'extendedKeyUsage = serverAuth,clientAuth', `subjectAltName = ${san.join(',')}`,
        '',
      ].join('\n'),
    );
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'key.pem'), '-out', join(work, 'host.csr'), '-subj', `/O=Ferry/CN=${o.host}`]);
    await openssl([
      'ca', '-batch', '-notext', '-rand_serial', '-config', join(work, 'openssl.cnf'), '-extensions', 'host',
      '-cert', ca.cert, '-keyfile', ca.key, '-in', join(work, 'host.csr'), '-out', join(work, 'cert.pem'),
      '-startdate', asn1Time(notBefore), '-enddate', asn1Time(notAfter),
    ]);
    // The key first: an agent reading in between sees a new key with the old certificate, refuses the pair and
    // keeps serving the old one until the certificate lands (certificate-rotation.ts).
    const files = { certFile: join(out, 'cert.pem'), keyFile: join(out, 'key.pem'), caFile: join(out, 'ca.pem') };
    install(files.keyFile, 0o600, join(work, 'key.pem'));
    install(files.certFile, 0o644, join(work, 'cert.pem'));
    if (files.caFile !== ca.cert) install(files.caFile, 0o644, ca.cert);
    return { ...files, identity };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
