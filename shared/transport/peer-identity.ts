/**
 * Who a certificate names: a SPIFFE-style ID spiffe://<trust-domain>/ferry/<host> in its one URI SAN, or
 * (without a URI SAN) its DNS names. Parsed from the subjectAltName text Node gives (`X509Certificate`,
 * `PeerCertificate.subjectaltname`); a certificate with more than one URI SAN names nobody, as SPIFFE requires.
 */
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';

export interface SpiffeId {
  /** The whole ID, spiffe://TD/ferry/HOST. */
  readonly id: string;
  readonly trustDomain: string;
  readonly host: string;
}

export interface PeerIdentity {
  /** From the URI SAN; undefined when the certificate has none. */
  readonly spiffe: SpiffeId | undefined;
  /** DNS SANs, lower-cased. */
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

/** What a parse found wrong, in words for the error's detail. */
export type IdentityResult = { ok: true; identity: PeerIdentity } | { ok: false; problem: string };

const MAX_ID = 2048; // SPIFFE's limit for a whole ID
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
/** One SPIFFE path segment; '.' and '..' are excluded separately. */
const SEGMENT = /^[A-Za-z0-9._-]{1,253}$/;
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function isHostSegment(s: string): boolean {
  return SEGMENT.test(s) && s !== '.' && s !== '..';
}

export function isTrustDomain(s: string): boolean {
  return TRUST_DOMAIN.test(s) && !s.startsWith('.') && !s.endsWith('.') && !s.includes('..');
}

export function isDnsName(s: string): boolean {
  return DNS_NAME.test(s);
}

/** spiffe://TD/ferry/HOST, strictly (no port, user, query, fragment, empty or dot segments); undefined otherwise. */
export function parseSpiffeId(text: string): SpiffeId | undefined {
  if (text.length > MAX_ID || !text.startsWith('spiffe://')) return undefined;
  const [trustDomain, ...path] = text.slice('spiffe://'.length).split('/');
  if (trustDomain === undefined || !isTrustDomain(trustDomain)) return undefined;
  if (path.length !== 2 || path[0] !== 'ferry' || !isHostSegment(path[1]!)) return undefined;
  return { id: text, trustDomain, host: path[1]! };
}

export function spiffeIdFor(trustDomain: string, host: string): string {
  return `spiffe://${trustDomain}/ferry/${host}`;
}

/**
 * Splits Node's subjectAltName text ("DNS:a, URI:spiffe://x/ferry/a, IP Address:10.0.0.1") into entries.
 * Node quotes a value that holds a comma or a quote as a JSON string; such a value is kept, unquoted, and then
 * fails the strict checks of its kind.
 */
export function parseSubjectAltName(text: string): { type: string; value: string }[] | undefined {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) return undefined;
    const type = text.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      const m = /^"(?:[^"\\]|\\.)*"/.exec(text.slice(j));
      if (!m) return undefined;
      try {
        value = JSON.parse(m[0]) as string;
      } catch {
        return undefined;
      }
      j += m[0].length;
    } else {
      const end = text.indexOf(', ', j);
      value = text.slice(j, end < 0 ? text.length : end);
      j = end < 0 ? text.length : end;
    }
    out.push({ type, value });
    if (j < text.length) {
      if (!text.startsWith(', ', j)) return undefined;
      j += 2;
    }
    i = j;
  }
  return out;
}

/** The identity a certificate's subjectAltName names, or why it names none. */
export function identityFromSubjectAltName(san: string | undefined): IdentityResult {
  const entries = san ? parseSubjectAltName(san) : [];
  if (!entries) return { ok: false, problem: 'its subjectAltName cannot be parsed' };
  const uris = entries.filter((e) => e.type === 'URI').map((e) => e.value);
  const dnsNames = entries.filter((e) => e.type === 'DNS').map((e) => e.value.toLowerCase());
  const ipAddresses = entries.filter((e) => e.type === 'IP Address').map((e) => e.value);
  if (uris.length > 1) return { ok: false, problem: `it has ${uris.length} URI SANs (SPIFFE allows one)` };
  let spiffe: SpiffeId | undefined;
  if (uris.length === 1) {
    spiffe = parseSpiffeId(uris[0]!);
    if (!spiffe) return { ok: false, problem: `its URI SAN "${clip(uris[0]!)}" is not spiffe://TRUST-DOMAIN/ferry/HOST` };
  }
  const badDns = dnsNames.find((n) => !isDnsName(n));
  if (badDns !== undefined) return { ok: false, problem: `its DNS SAN "${clip(badDns)}" is not a host name` };
  if (!spiffe && dnsNames.length === 0) return { ok: false, problem: 'it has neither a URI SAN nor a DNS SAN' };
  return { ok: true, identity: { spiffe, dnsNames, ipAddresses: ipAddresses.filter((a) => isIP(a) !== 0) } };
}

/** The identity as logs and errors show it: the SPIFFE ID, else the DNS names. */
export function describeIdentity(identity: PeerIdentity): string {
  return identity.spiffe?.id ?? identity.dnsNames.map((n) => `DNS:${n}`).join(',');
}

/**
 * The verified identity of the peer of a server call (`call.getAuthContext()`): undefined when the call did not
 * come over TLS with a client certificate that the CA verified, or when that certificate names nobody.
 */
export function verifiedPeerIdentity(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined } | null }): PeerIdentity | undefined {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert) return undefined;
  const r = identityFromSubjectAltName(cert.subjectaltname);
  return r.ok ? r.identity : undefined;
}

/** Peer-supplied text in a message or a log line: bounded, whatever the certificate holds. */
export function clip(s: string, max = 200): string {
  return s.length > max ? `${s.slice(0, max)}...(${s.length} chars)` : s;
}
