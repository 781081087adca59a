/**
 * IPv6 neighbor discovery (RFC 4861) on one link of a network namespace, with frames built here and sent over
 * AF_PACKET (packet-socket.ts), as arp.ts does for IPv4: the unsolicited Neighbor Advertisement a task's copy
 * sends so that neighbours and switches learn where its address now is (override set: it replaces an entry), and
 * the duplicate address detection probe (RFC 4862: a Neighbor Solicitation from :: to the address's
 * solicited-node group, so no neighbour learns anything from it) whose answering NAs name who holds an address.
 * Hop limit 255 everywhere: a receiver drops neighbor discovery that crossed a router.
 */
import { FerryError } from '../errors/ferry-error.js';
import { formatIpv6, ipv6Bytes, isIpv6, solicitedNodeGroup } from './ipv6.js';
import { macBytes, macOfBytes, macProblem } from './mac-address.js';
import { probeWith, sendRepeated } from './packet-socket.js';

const ETH_P_IPV6 = 0x86dd;
const IPPROTO_ICMPV6 = 58;
const HOP_LIMIT = 255;
const NEIGHBOR_SOLICITATION = 135;
const NEIGHBOR_ADVERTISEMENT = 136;
const OPTION_SOURCE_LLADDR = 1;
const OPTION_TARGET_LLADDR = 2;
const FLAG_ROUTER = 0x80;
const FLAG_SOLICITED = 0x40;
const FLAG_OVERRIDE = 0x20;
const ETH = 14;
const IP6 = 40;
const ALL_NODES = ipv6Bytes('ff02::1');
const UNSPECIFIED = Buffer.alloc(16);

/** The Ethernet address of an IPv6 multicast group: 33:33 and the group's last four bytes (RFC 2464). */
const multicastMac = (group: Uint8Array): Buffer => Buffer.concat([Buffer.from([0x33, 0x33]), group.subarray(12, 16)]);

/** The ICMPv6 checksum: one's complement sum over the pseudo-header (src, dst, length, next header) and the message. */
export function icmpv6Checksum(src: Uint8Array, dst: Uint8Array, message: Uint8Array): number {
  const pseudo = Buffer.alloc(40);
  Buffer.from(src).copy(pseudo, 0);
  Buffer.from(dst).copy(pseudo, 16);
  pseudo.writeUInt32BE(message.length, 32);
  pseudo.writeUInt8(IPPROTO_ICMPV6, 39);
  let sum = 0;
  const add = (b: Uint8Array): void => {
    for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  };
  add(pseudo);
  add(message);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Ethernet + IPv6 + the ICMPv6 `message` (its checksum filled in here). */
function icmpv6Frame(dstMac: Uint8Array, srcMac: string, src: Uint8Array, dst: Uint8Array, message: Buffer): Buffer {
  const f = Buffer.alloc(ETH + IP6 + message.length);
  Buffer.from(dstMac).copy(f, 0);
  macBytes(srcMac).copy(f, 6);
  f.writeUInt16BE(ETH_P_IPV6, 12);
  f.writeUInt32BE(0x60000000, ETH); // version 6, traffic class 0, flow label 0
  f.writeUInt16BE(message.length, ETH + 4);
  f.writeUInt8(IPPROTO_ICMPV6, ETH + 6);
  f.writeUInt8(HOP_LIMIT, ETH + 7);
  Buffer.from(src).copy(f, ETH + 8);
  Buffer.from(dst).copy(f, ETH + 24);
  message.writeUInt16BE(icmpv6Checksum(src, dst, message), 2);
  message.copy(f, ETH + IP6);
  return f;
}

/** The unsolicited NA of `address` by `mac` to all nodes: override set, solicited and router clear, its MAC as the target link-layer option. */
export function unsolicitedAdvertisementFrame(address: string, mac: string): Buffer {
  const m = Buffer.alloc(32);
  m.writeUInt8(NEIGHBOR_ADVERTISEMENT, 0);
  m.writeUInt8(FLAG_OVERRIDE, 4);
  ipv6Bytes(address).copy(m, 8);
  m.writeUInt8(OPTION_TARGET_LLADDR, 24);
  m.writeUInt8(1, 25); // in units of 8 bytes
  macBytes(mac).copy(m, 26);
  return icmpv6Frame(multicastMac(ALL_NODES), mac, ipv6Bytes(address), ALL_NODES, m);
}

/** The DAD probe for `address` from `mac`: an NS from :: to its solicited-node group, without a source link-layer option (RFC 4861 7.1.1). */
export function dadSolicitationFrame(address: string, mac: string): Buffer {
  const target = ipv6Bytes(address);
  const group = solicitedNodeGroup(target);
  const m = Buffer.alloc(24);
  m.writeUInt8(NEIGHBOR_SOLICITATION, 0);
  target.copy(m, 8);
  return icmpv6Frame(multicastMac(group), mac, UNSPECIFIED, group, m);
}

export interface NeighborMessage {
  kind: 'solicitation' | 'advertisement';
  /** The Ethernet source. */
  frameMac: string;
  src: string;
  dst: string;
  target: string;
  router: boolean;
  solicited: boolean;
  override: boolean;
  /** The source (NS) or target (NA) link-layer address option, if present. */
  optionMac?: string;
}

/**
 * The NS or NA of an Ethernet frame, or undefined: not IPv6 carrying ICMPv6 directly, not hop limit 255, a bad
 * checksum, or too short. (A neighbor discovery message with extension headers is not one Ferry needs to hear.)
 */
export function parseNeighborFrame(f: Buffer): NeighborMessage | undefined {
  if (f.length < ETH + IP6 + 24 || f.readUInt16BE(12) !== ETH_P_IPV6 || f[ETH]! >> 4 !== 6) return undefined;
  if (f[ETH + 6] !== IPPROTO_ICMPV6 || f[ETH + 7] !== HOP_LIMIT) return undefined;
  const length = f.readUInt16BE(ETH + 4);
  if (length < 24 || ETH + IP6 + length > f.length) return undefined;
  const src = f.subarray(ETH + 8, ETH + 24);
  const dst = f.subarray(ETH + 24, ETH + 40);
  const m = f.subarray(ETH + IP6, ETH + IP6 + length);
  const type = m[0];
  if ((type !== NEIGHBOR_SOLICITATION && type !== NEIGHBOR_ADVERTISEMENT) || m[1] !== 0) return undefined;
  const copy = Buffer.from(m);
  copy.writeUInt16BE(0, 2);
  if (icmpv6Checksum(src, dst, copy) !== m.readUInt16BE(2)) return undefined;
  const wanted = type === NEIGHBOR_SOLICITATION ? OPTION_SOURCE_LLADDR : OPTION_TARGET_LLADDR;
  let optionMac: string | undefined;
  for (let at = 24; at + 2 <= m.length; ) {
    const len = m[at + 1]! * 8;
    if (len === 0 || at + len > m.length) return undefined; // RFC 4861 4.6: a zero-length option voids the message
    if (m[at] === wanted && len === 8) optionMac = macOfBytes(m.subarray(at + 2, at + 8));
    at += len;
  }
  const flags = m[4]!;
  return {
    kind: type === NEIGHBOR_SOLICITATION ? 'solicitation' : 'advertisement',
    frameMac: macOfBytes(f.subarray(6, 12)),
    src: formatIpv6(src),
    dst: formatIpv6(dst),
    target: formatIpv6(m.subarray(8, 24)),
    router: (flags & FLAG_ROUTER) !== 0,
    solicited: (flags & FLAG_SOLICITED) !== 0,
    override: (flags & FLAG_OVERRIDE) !== 0,
    ...(optionMac !== undefined && { optionMac }),
  };
}

function checkArgs(ip: string, mac?: string): void {
  if (!isIpv6(ip)) throw new FerryError('INTERNAL', { message: `neighbor discovery for ${ip.slice(0, 45)}: not an IPv6 address` });
  const problem = mac === undefined ? undefined : macProblem(mac);
  if (problem) throw new FerryError('INTERNAL', { message: `neighbor advertisement from ${mac}: ${problem}` });
}

/** `count` unsolicited NAs of `ip` by `mac` from `link` of `netns`, `intervalMs` apart (default 100 ms). */
export async function sendUnsolicitedAdvertisement(netns: string, link: string, ip: string, mac: string, count: number, intervalMs = 100, signal?: AbortSignal): Promise<void> {
  checkArgs(ip, mac);
  await sendRepeated(netns, link, ETH_P_IPV6, unsolicitedAdvertisementFrame(ip, mac), count, intervalMs, signal);
}

/**
 * A DAD probe for `ip` from `link` of `netns`: the MACs of the stations whose NA for `ip` was heard within
 * `timeoutMs` (the target link-layer option, else the frame's source), deduplicated; [] when nobody holds it.
 */
export async function probeNeighbor(netns: string, link: string, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  checkArgs(ip);
  const target = formatIpv6(ipv6Bytes(ip));
  const claimant = (frame: Buffer): string | undefined => {
    const m = parseNeighborFrame(frame);
    return m?.kind === 'advertisement' && m.target === target ? (m.optionMac ?? m.frameMac) : undefined;
  };
  return probeWith(netns, link, ETH_P_IPV6, (own) => dadSolicitationFrame(ip, own), timeoutMs, claimant, signal);
}
