/** Peer identities (SPIFFE-style URI SANs, DNS SANs) and the allow-list: pure parsing and matching. */
import { describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PeerAllowList } from '../../shared/transport/peer-allow-list.js';
import { identityFromSubjectAltName, parseSpiffeId, parseSubjectAltName, verifiedPeerIdentity, type PeerIdentity } from '../../shared/transport/peer-identity.js';
import { authorizeCall } from '../../shared/transport/peer-authorization.js';
import { compileTransportSecurity } from '../../shared/transport/transport-security.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const identity = (san: string): PeerIdentity => {
  const r = identityFromSubjectAltName(san);
  if (!r.ok) throw new Error(r.problem);
  return r.identity;
};

describe('parseSpiffeId', () => {
  it('takes spiffe://TD/ferry/HOST', () => {
    expect(parseSpiffeId('spiffe://prod.example/ferry/host-b.1')).toEqual({ id: 'spiffe://prod.example/ferry/host-b.1', trustDomain: 'prod.example', host: 'host-b.1' });
  });

  it.each([
    'spiffe://Prod.example/ferry/b', // upper case trust domain
    'spiffe://prod.example:443/ferry/b',
    'spiffe://user@prod.example/ferry/b',
    'spiffe://prod.example/ferry/b?x=1',
    'spiffe://prod.example/ferry/b#f',
    'spiffe://prod.example/ferry/',
    'spiffe://prod.example/ferry/..',
    'spiffe://prod.example/ferry/.',
    'spiffe://prod.example/ferry/b/c',
    'spiffe://prod.example/other/b',
    'spiffe://prod.example//ferry/b',
    'spiffe:///ferry/b',
    'spiffe://.example/ferry/b',
    'https://prod.example/ferry/b',
    `spiffe://prod.example/ferry/${'a'.repeat(3000)}`,
  ])('refuses %s', (text) => {
    expect(parseSpiffeId(text)).toBeUndefined();
  });
});

describe('identityFromSubjectAltName', () => {
  it('reads the SPIFFE ID, the DNS names and the IP addresses', () => {
    expect(identity('URI:spiffe://td/ferry/b, DNS:B.example, IP Address:10.0.0.2')).toEqual({
      spiffe: { id: 'spiffe://td/ferry/b', trustDomain: 'td', host: 'b' },
      dnsNames: ['b.example'],
      ipAddresses: ['10.0.0.2'],
    });
  });

  it('takes a certificate with DNS names only', () => {
    expect(identity('DNS:b.example')).toMatchObject({ spiffe: undefined, dnsNames: ['b.example'] });
  });

  it.each([
    ['URI:spiffe://td/ferry/a, URI:spiffe://td/ferry/b', /2 URI SANs/],
    ['URI:https://td/ferry/a', /not spiffe/],
    ['IP Address:10.0.0.2', /neither/],
    ['', /neither/],
    ['DNS:"a,b"', /not a host name/], // Node quotes a value with a comma: kept whole, then refused
    ['URI:"spiffe://td/ferry/a, URI:spiffe://td/ferry/evil"', /not spiffe/],
    ['garbage', /cannot be parsed/],
  ])('names nobody: %s', (san, problem) => {
    const r = identityFromSubjectAltName(san);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(problem);
  });

  it('splits what Node writes, quoted values included', () => {
    expect(parseSubjectAltName('DNS:a, URI:"x, y", IP Address:::1')).toEqual([
      { type: 'DNS', value: 'a' },
      { type: 'URI', value: 'x, y' },
      { type: 'IP Address', value: '::1' },
    ]);
  });
});

describe('PeerAllowList', () => {
  const b = identity('URI:spiffe://td/ferry/b, DNS:b.example');
  const c = identity('URI:spiffe://td/ferry/c');
  const other = identity('URI:spiffe://other/ferry/b, DNS:b.other');

  it('matches exact IDs, a whole trust domain, and DNS names', () => {
    const exact = PeerAllowList.parse(['spiffe://td/ferry/b']);
    expect([exact.allows(b), exact.allows(c), exact.allows(other)]).toEqual([true, false, false]);
    const domain = PeerAllowList.parse(['spiffe://td/ferry/*']);
    expect([domain.allows(b), domain.allows(c), domain.allows(other)]).toEqual([true, true, false]);
    const dns = PeerAllowList.parse(['B.Example']);
    expect([dns.allows(b), dns.allows(c), dns.allows(other)]).toEqual([true, false, false]);
    expect(PeerAllowList.trustDomain('other').allows(other)).toBe(true);
  });

  it.each(['spiffe://td/ferry/**', 'spiffe://td/*', 'spiffe://TD/ferry/b', '*.example', 'b_c', '', 'spiffe://td/ferry/b/'])('refuses the entry "%s" (BAD_ARGUMENT)', (entry) => {
    expectFerryError(() => PeerAllowList.parse([entry]), 'BAD_ARGUMENT');
  });
});

describe('authorizeCall (the check every call to a TLS agent passes)', () => {
  const allowList = PeerAllowList.parse(['spiffe://td/ferry/source']);
  const withCert = (subjectaltname: string) => ({ transportSecurityType: 'ssl', sslPeerCertificate: { subjectaltname } as never });

  it('lets an allowed identity through, and verifiedPeerIdentity reads it', () => {
    const auth = withCert('URI:spiffe://td/ferry/source');
    expect(authorizeCall(auth, '/ferry.v1.Dest/Prepare', { allowList, side: 'dest' })).toMatchObject({ ok: true });
    expect(verifiedPeerIdentity({ getAuthContext: () => auth })?.spiffe?.host).toBe('source');
    expect(verifiedPeerIdentity({ getAuthContext: () => ({}) })).toBeUndefined();
  });

  it.each([
    [{}, 'CERT_REFUSED_BY_PEER'],
    [null, 'CERT_REFUSED_BY_PEER'],
    [withCert('URI:spiffe://td/ferry/a, URI:spiffe://td/ferry/source'), 'PEER_IDENTITY_INVALID'],
    [withCert('URI:spiffe://td/ferry/stranger'), 'PEER_NOT_ALLOWED'],
  ] as const)('refuses %j with %s', (auth, key) => {
    const r = authorizeCall(auth, '/ferry.v1.Dest/Prepare', { allowList, side: 'dest' });
    expect(r.ok ? undefined : r.error.key).toBe(key);
  });

  it("applies the agent's own rule after the allow-list", () => {
    const r = authorizeCall(withCert('URI:spiffe://td/ferry/source'), '/ferry.v1.Dest/Abort', {
      allowList,
      side: 'dest',
      authorize: (peer, method) => (method.endsWith('/Abort') ? new FerryError('PEER_NOT_ALLOWED', { message: `${peer.spiffe?.host} may not abort` }) : undefined),
    });
    expect(r.ok ? undefined : r.error.message).toBe('source may not abort');
  });
});

describe('compileTransportSecurity', () => {
  it('never implies plaintext, and refuses TLS flags beside --insecure', () => {
    expectFerryError(() => compileTransportSecurity({ insecureAnyAddress: true }, ['server']), 'BAD_ARGUMENT');
    expectFerryError(() => compileTransportSecurity({ insecure: true, certFile: '/x' }, ['server']), 'BAD_ARGUMENT');
    expect(compileTransportSecurity({ insecure: true }, ['server'])).toEqual({ kind: 'insecure', anyAddress: false });
  });

  it('TLS by default: missing files are TLS_FILES_MISSING, read from FERRY_TLS_DIR', () => {
    const e = expectFerryError(() => compileTransportSecurity({}, ['client'], { FERRY_TLS_DIR: '/nonexistent/tls' }), 'TLS_FILES_MISSING');
    expect(e.message).toContain('/nonexistent/tls/cert.pem');
  });
});
