/**
 * IPv6 addresses and ADDRESS/PREFIX, parsed strictly and written in the one canonical text form of RFC 5952
 * (lower-case hex, no leading zeros, the longest run of two or more zero groups as `::`, the first of equal
 * runs), so that two spellings of one address compare equal: what `ferry run --net` takes (any form,
 * normalized) and a TaskNetwork carries (canonical only). Pure; callers turn a problem into their own error.
 */
import { ipv4Bytes, isIpv4 } from './ipv4.js';

export interface Ipv6Cidr {
  /** Canonical text (RFC 5952). */
  address: string;
  prefix: number;
}

const GROUP = /^[0-9a-fA-F]{1,4}$/;

/** The 16 bytes of `text`, or undefined when it is not an IPv6 address (no zone id; a trailing dotted quad is accepted). */
export function parseIpv6(text: string): Buffer | undefined {
  if (text.length > 45 || text.includes('%')) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === '') return [];
    const parts = half.split(':');
    const out: number[] = [];
    for (const [i, p] of parts.entries()) {
      if (i === parts.length - 1 && isIpv4(p)) {
        const b = ipv4Bytes(p);
        out.push(b.readUInt16BE(0), b.readUInt16BE(2));
      } else if (GROUP.test(p)) out.push(parseInt(p, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  // A dotted quad may only end the address.
  if (halves.length === 2 && halves[0]!.split(':').some(isIpv4)) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
}

export const isIpv6 = (text: string): boolean => parseIpv6(text) !== undefined;

/** RFC 5952 text of 16 bytes. */
export function formatIpv6(b: Uint8Array): string {
  const g = Array.from({ length: 8 }, (_, i) => (b[i * 2]! << 8) | b[i * 2 + 1]!);
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return best.at < 0 ? hex(0, 8) : `${hex(0, best.at)}::${hex(best.at + best.len, 8)}`;
}

/** The canonical text of an address; call isIpv6 first. */
export const normalizeIpv6 = (text: string): string => formatIpv6(parseIpv6(text)!);

/** The address's bytes; call isIpv6 first. */
export const ipv6Bytes = (text: string): Buffer => parseIpv6(text)!;

function prefixMatches(a: Uint8Array, b: Uint8Array, prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit += 8) {
    const m = prefix - bit >= 8 ? 0xff : (0xff << (8 - (prefix - bit))) & 0xff;
    if ((a[bit / 8]! & m) !== (b[bit / 8]! & m)) return false;
  }
  return true;
}

/** Whether `address` lies in the prefix of `cidr`. */
export function inSubnet6(cidr: Ipv6Cidr, address: string): boolean {
  const b = parseIpv6(address);
  return b !== undefined && prefixMatches(ipv6Bytes(cidr.address), b, cidr.prefix);
}

/** fe80::/10: every IPv6 link has one of its own; it is not the task's identity and does not move. */
export const isLinkLocal6 = (b: Uint8Array): boolean => b[0] === 0xfe && (b[1]! & 0xc0) === 0x80;

/**
 * What is wrong with `text` as a host's global ADDRESS/PREFIX, or undefined when it is one: syntax, a prefix
 * outside 1-128, an address no task's identity can be (unspecified, loopback, multicast, link-local, an IPv4-
 * mapped one), or the subnet-router anycast address of its prefix (host bits zero, prefixes up to /126).
 */
export function ipv6CidrProblem(text: string): string | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return 'no /PREFIX';
  const address = text.slice(0, slash);
  const p = text.slice(slash + 1);
  const b = parseIpv6(address);
  if (!b) return `${address.slice(0, 45)} is not an IPv6 address`;
  if (!/^(12[0-8]|1[01]\d|[1-9]?\d)$/.test(p) || Number(p) === 0) return 'the prefix must be 1 to 128';
  const prefix = Number(p);
  if (b.every((x) => x === 0)) return 'the unspecified address :: is no host address';
  if (b.subarray(0, 15).every((x) => x === 0) && b[15] === 1) return '::1 is the loopback address';
  if (b[0] === 0xff) return `${formatIpv6(b)} is a multicast address`;
  if (isLinkLocal6(b)) return `${formatIpv6(b)} is link-local (fe80::/10): give a global or unique local address`;
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return `${formatIpv6(b)} is an IPv4-mapped address: give the IPv4 address itself`;
  if (prefix <= 126 && hostBitsZero(b, prefix)) {
    return `${formatIpv6(b)} is the subnet-router anycast address of its /${prefix}, not a host in it`;
  }
  return undefined;
}

function hostBitsZero(b: Uint8Array, prefix: number): boolean {
  for (let bit = prefix; bit < 128; bit++) if ((b[bit >> 3]! >> (7 - (bit & 7))) & 1) return false;
  return true;
}

/** `text` as an Ipv6Cidr, its address canonical; call ipv6CidrProblem first. */
export function parseIpv6Cidr(text: string): Ipv6Cidr {
  const [address, prefix] = text.split('/') as [string, string];
  return { address: normalizeIpv6(address), prefix: Number(prefix) };
}

/** The solicited-node multicast group of an address (ff02::1:ffXX:XXXX, RFC 4291), where a DAD probe for it goes. */
export function solicitedNodeGroup(address: Uint8Array): Buffer {
  const g = Buffer.from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0]);
  Buffer.from(address.subarray(13, 16)).copy(g, 13);
  return g;
}
