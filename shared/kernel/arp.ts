/**
 * ARP on one link of a network namespace, over an AF_PACKET socket made inside it (netns-socket.ts): the
 * gratuitous ARP a task's copy sends so that the segment's switches and neighbours learn where its address now
 * is, and the RFC 5227 probe that asks whether anyone holds an address (sender IP 0.0.0.0: a probe updates no
 * neighbour's cache, so asking never misdirects traffic). Waits are bounded by the caller's timeout, and polled
 * on a non-blocking socket so that node's event loop keeps running meanwhile; every socket is closed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError, SystemCallError } from '../errors/ferry-error.js';
import { bind, Errno, recv, sendto } from '../native/libc.js';
import { closeFd } from '../native/ptrace.js';
import { ipv4Bytes, isIpv4 } from './ipv4.js';
import { macBytes, macOfBytes, macProblem } from './mac-address.js';
import { socketIn } from './netns-socket.js';
import { listLinks } from './rtnetlink.js';

const AF_PACKET = 17;
const SOCK_RAW_CLOEXEC_NONBLOCK = 3 | 0x80000 | 0x800;
const ETH_P_ARP = 0x0806;
const ARPHRD_ETHER = 1;
const ARPOP_REQUEST = 1;
const ARPOP_REPLY = 2;
const BROADCAST = Buffer.alloc(6, 0xff);
/** Ethernet's minimum frame (without the FCS): a short ARP is padded with zeros. */
const FRAME_BYTES = 60;
const POLL_MS = 5;

/** A packet socket for ARP bound to `link` of the namespace `netns` (its ifindex, and its own MAC). */
function arpSocket(netns: string, link: string): { fd: number; ifindex: number; mac: string } {
  const found = listLinks(netns).find((l) => l.name === link);
  if (!found) throw new FerryError('INTERNAL', { message: `no link ${link} in ${netns}` });
  const fd = socketIn(netns, AF_PACKET, SOCK_RAW_CLOEXEC_NONBLOCK, htons(ETH_P_ARP));
  try {
    bind(fd, sockaddrLl(found.ifindex));
    return { fd, ifindex: found.ifindex, mac: found.mac };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

const htons = (v: number): number => ((v & 0xff) << 8) | (v >> 8);

/** struct sockaddr_ll for `ifindex`, with a broadcast destination (what sendto uses; bind ignores the address). */
function sockaddrLl(ifindex: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16LE(AF_PACKET, 0);
  b.writeUInt16BE(ETH_P_ARP, 2);
  b.writeInt32LE(ifindex, 4);
  b.writeUInt16LE(ARPHRD_ETHER, 8);
  b.writeUInt8(6, 11);
  BROADCAST.copy(b, 12);
  return b;
}

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
  const { fd, ifindex } = arpSocket(netns, link);
  try {
    const frame = arpFrame(ARPOP_REQUEST, mac, ip, ip);
    for (let i = 0; i < count; i++) {
      if (i > 0) await sleep(opts.intervalMs ?? 100, undefined, { signal: opts.signal });
      sendto(fd, frame, sockaddrLl(ifindex));
    }
  } finally {
    closeFd(fd);
  }
}

/**
 * An RFC 5227 probe for `ip` from `link` of the namespace `netns`: the MACs of every station that claimed `ip`
 * within `timeoutMs` (its reply, or any ARP it sent with `ip` as the sender), deduplicated, in the order heard.
 * A second probe goes out halfway, in case the first was lost. [] when nobody holds the address.
 */
export async function probeArp(netns: string, link: string, ip: string, timeoutMs: number, signal?: AbortSignal): Promise<string[]> {
  checkArgs(ip);
  const { fd, ifindex, mac } = arpSocket(netns, link);
  try {
    const probe = arpFrame(ARPOP_REQUEST, mac, '0.0.0.0', ip);
    const to = sockaddrLl(ifindex);
    const start = Date.now();
    sendto(fd, probe, to);
    let second = false;
    const heard: string[] = [];
    const buf = Buffer.alloc(2048);
    while (Date.now() - start < timeoutMs) {
      signal?.throwIfAborted();
      if (!second && Date.now() - start >= timeoutMs / 2) {
        sendto(fd, probe, to);
        second = true;
      }
      const n = receiveOne(fd, buf);
      if (n === 0) {
        await sleep(POLL_MS);
        continue;
      }
      const m = parseArpFrame(buf.subarray(0, n));
      if (m && m.senderIp === ip && m.senderMac !== mac && !heard.includes(m.senderMac)) heard.push(m.senderMac);
    }
    return heard;
  } finally {
    closeFd(fd);
  }
}

/** One frame into `buf`, or 0 when none is waiting. */
function receiveOne(fd: number, buf: Buffer): number {
  try {
    return recv(fd, buf);
  } catch (e) {
    if (e instanceof SystemCallError && e.errno === Errno.EAGAIN) return 0;
    throw e;
  }
}
