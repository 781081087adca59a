/**
 * ARP on one link of a network namespace, over an AF_PACKET socket made inside it (packet-socket.ts): the
 * gratuitous ARP a task's copy sends so that the segment's switches and neighbours learn where its address now
 * is, and the RFC 5227 probe that asks whether anyone holds an address (sender IP 0.0.0.0: a probe updates no
 * neighbour's cache, so asking never misdirects traffic). Waits are bounded by the caller's timeout, and polled
 * on a non-blocking socket so that node's event loop keeps running meanwhile; every socket is closed.
 */
import { FerryError } from '../errors/ferry-error.js';
import { ipv4Bytes, isIpv4 } from './ipv4.js';
import { macBytes, macOfBytes, macProblem } from './mac-address.js';
import { probeWith, sendRepeated } from './packet-socket.js';

const ETH_P_ARP = 0x0806;
const ARPHRD_ETHER = 1;
const ARPOP_REQUEST = 1;
const ARPOP_REPLY = 2;
const BROADCAST = Buffer.alloc(6, 0xff);
/** Ethernet's minimum frame (without the FCS): a short ARP is padded with zeros. */
const FRAME_BYTES = 60;

/** An Ethernet frame to broadcast holding one ARP message of IPv4 over Ethernet. */
function arpFrame(op: number, senderMac: string, senderIp: string, targetIp: string): Buffer {
  const f = Buffer.alloc(FRAME_BYTES);
  BROADCAST.copy(f, 0);
  macBytes(senderMac).copy(f, 6);
  f.writeUInt16BE(ETH_P_ARP, 12);
  f.writeUInt16BE(ARPHRD_ETHER, 14);
  f.writeUInt16BE(0x0800, 16);
  f.writeUInt8(6, 18);
  f.writeUInt8(4, 19);
  f.writeUInt16BE(op, 20);
  macBytes(senderMac).copy(f, 22);
  ipv4Bytes(senderIp).copy(f, 28);
  // Target MAC (32-37) stays zero: unknown, as in a request.
  ipv4Bytes(targetIp).copy(f, 38);
  return f;
}

export interface ArpMessage {
  op: 'request' | 'reply';
  senderMac: string;
  senderIp: string;
  targetIp: string;
}

/** The ARP message of an Ethernet frame (IPv4 over Ethernet only), or undefined. */
export function parseArpFrame(f: Buffer): ArpMessage | undefined {
  if (f.length < 42 || f.readUInt16BE(12) !== ETH_P_ARP) return undefined;
  if (f.readUInt16BE(14) !== ARPHRD_ETHER || f.readUInt16BE(16) !== 0x0800 || f[18] !== 6 || f[19] !== 4) return undefined;
  const op = f.readUInt16BE(20);
  if (op !== ARPOP_REQUEST && op !== ARPOP_REPLY) return undefined;
  const ip = (off: number): string => [...f.subarray(off, off + 4)].join('.');
  return { op: op === ARPOP_REQUEST ? 'request' : 'reply', senderMac: macOfBytes(f.subarray(22, 28)), senderIp: ip(28), targetIp: ip(38) };
}

function checkArgs(ip: string, mac?: string): void {
  if (!isIpv4(ip)) throw new FerryError('INTERNAL', { message: `ARP for ${ip}: not an IPv4 address` });
  const problem = mac === undefined ? undefined : macProblem(mac);
  if (problem) throw new FerryError('INTERNAL', { message: `ARP from ${mac}: ${problem}` });
}

export interface GratuitousArpOptions {
  /** Between two announcements; default 100 ms. */
  intervalMs?: number;
  signal?: AbortSignal;
}

/**
 * `count` gratuitous ARP requests (sender and target IP both `ip`, sender MAC `mac`) from `link` of the
 * namespace `netns`, `intervalMs` apart: every neighbour holding `ip` updates its entry, and every switch learns
 * the port `mac` is behind.
 */
export async function sendGratuitousArp(netns: string, link: string, ip: string, mac: string, count: number, opts: GratuitousArpOptions = {}): Promise<void> {
  checkArgs(ip, mac);
  await sendRepeated(netns, link, ETH_P_ARP, arpFrame(ARPOP_REQUEST, mac, ip, ip), count, opts.intervalMs ?? 100, opts.signal);
}

/**
 * An RFC 5227 probe for `ip` from `link` of the namespace `netns`: the MACs of every station that claimed `ip`
 * within `timeoutMs` (its reply, or any ARP it sent with `ip` as the sender), deduplicated, in the order heard.
 * A second probe goes out halfway, in case the first was lost. [] when nobody holds the address.
 */
export async function probeArp(netns: string, link: string, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  checkArgs(ip);
  const claimant = (frame: Buffer): string | undefined => {
    const m = parseArpFrame(frame);
    return m && m.senderIp === ip ? m.senderMac : undefined;
  };
  return probeWith(netns, link, ETH_P_ARP, (own) => arpFrame(ARPOP_REQUEST, own, '0.0.0.0', ip), timeoutMs, claimant, signal);
}
