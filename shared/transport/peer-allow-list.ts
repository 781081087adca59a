/**
 * The peers an agent talks to (`--allow-peer ID`, repeatable): an exact SPIFFE ID spiffe://TD/ferry/HOST,
 * every host of a trust domain spiffe://TD/ferry/*, or a DNS name (matched against the DNS SANs of a
 * certificate). The list is checked after the CA verified the certificate: it says which of the CA's hosts
 * may call (or be called), never replaces the CA.
 */
import { FerryError } from '../errors/ferry-error.js';
import { clip, isDnsName, isTrustDomain, parseSpiffeId, type PeerIdentity } from './peer-identity.js';

type AllowEntry = { kind: 'spiffe'; id: string } | { kind: 'trust-domain'; trustDomain: string } | { kind: 'dns'; name: string };

const MAX_ENTRIES = 1000;

function parseEntry(text: string): AllowEntry | undefined {
  if (text.startsWith('spiffe://')) {
    const wildcard = /^spiffe:\/\/([^/]+)\/ferry\/\*$/.exec(text);
    if (wildcard) return isTrustDomain(wildcard[1]!) ? { kind: 'trust-domain', trustDomain: wildcard[1]! } : undefined;
    const id = parseSpiffeId(text);
    return id ? { kind: 'spiffe', id: id.id } : undefined;
  }
  const name = text.toLowerCase();
  return isDnsName(name) ? { kind: 'dns', name } : undefined;
}

export class PeerAllowList {
  private constructor(private readonly entries: readonly AllowEntry[]) {}

  /** BAD_ARGUMENT for an entry that is neither form: a typo must not silently allow nobody (or everybody). */
  static parse(texts: readonly string[], flag = '--allow-peer'): PeerAllowList {
    if (texts.length > MAX_ENTRIES) throw new FerryError('BAD_ARGUMENT', { message: `${flag} may be given at most ${MAX_ENTRIES} times` });
    return new PeerAllowList(
      texts.map((t) => {
        const e = parseEntry(t);
        if (!e) {
          throw new FerryError('BAD_ARGUMENT', {
            message: `${flag} "${clip(t)}" is not an identity`,
            hint: `Name a peer as spiffe://TRUST-DOMAIN/ferry/HOST, spiffe://TRUST-DOMAIN/ferry/* (every host of the trust domain) or a DNS name.`,
          });
        }
        return e;
      }),
    );
  }

  /** Every host of one trust domain: the default when no --allow-peer is given. */
  static trustDomain(trustDomain: string): PeerAllowList {
    return new PeerAllowList([{ kind: 'trust-domain', trustDomain }]);
  }

  get size(): number {
    return this.entries.length;
  }

  allows(identity: PeerIdentity): boolean {
    return this.entries.some((e) => {
      switch (e.kind) {
        case 'spiffe':
          return identity.spiffe?.id === e.id;
        case 'trust-domain':
          return identity.spiffe?.trustDomain === e.trustDomain;
        case 'dns':
          return identity.dnsNames.includes(e.name);
      }
    });
  }

  toString(): string {
    // For this agent's own log; never sent to a peer (it would tell a refused peer whom to impersonate).
    return this.entries.map((e) => (e.kind === 'spiffe' ? e.id : e.kind === 'trust-domain' ? `spiffe://${e.trustDomain}/ferry/*` : e.name)).join(',');
  }
}
