/**
 * AF_PACKET sockets on one link of a network namespace (made inside it: netns-socket.ts), for the frames Ferry
 * builds itself: ARP (arp.ts) and IPv6 neighbor discovery (neighbor-discovery.ts). Non-blocking, so that a wait
 * polls; a probe yields to node's event loop every YIELD_EVERY frames too (a flood would keep a frame always
 * waiting); every wait is bounded by the caller's timeout. Made with protocol 0, which receives nothing, and bound
 * to the link with the ethertype (a socket made with it would queue that ethertype from every link until bound);
 * one that only sends is bound with none and never queues a frame. Closed off the main thread (closeFdAsync: a
 * packet socket's close waits for an RCU grace period).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError, SystemCallError } from '../errors/ferry-error.js';
import { bind, Errno, recv, sendto } from '../native/libc.js';
import { closeFd, closeFdAsync } from '../native/ptrace.js';
import { socketIn } from './netns-socket.js';
import { listLinks } from './rtnetlink.js';

const AF_PACKET = 17;
const SOCK_RAW_CLOEXEC_NONBLOCK = 3 | 0x80000 | 0x800;
const ARPHRD_ETHER = 1;
const POLL_MS = 5;
/** Frames a probe reads before it lets the event loop run (setImmediate): a flood must not hold node's main thread. */
export const YIELD_EVERY = 64;

export const htons = (v: number): number => ((v & 0xff) << 8) | (v >> 8);

interface PacketSocket {
  fd: number;
  ifindex: number;
  /** The link's own MAC. */
  mac: string;
  ethertype: number;
}

/**
 * A packet socket that sends `ethertype` from `link` of the namespace `netns`, and receives that ethertype on that
 * link only when `receive`; the caller closes it (closeFd).
 */
function packetSocket(netns: string, link: string, ethertype: number, receive: boolean): PacketSocket {
  const found = listLinks(netns).find((l) => l.name === link);
  if (!found) throw new FerryError('INTERNAL', { message: `no link ${link} in ${netns}` });
  const fd = socketIn(netns, AF_PACKET, SOCK_RAW_CLOEXEC_NONBLOCK, 0);
  try {
    bind(fd, linkLayerAddress(found.ifindex, receive ? ethertype : 0, Buffer.alloc(6, 0xff)));
    return { fd, ifindex: found.ifindex, mac: found.mac, ethertype };
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** struct sockaddr_ll for `ifindex` with the destination `to` (what sendto uses; bind takes the ethertype, ignores the address). */
function linkLayerAddress(ifindex: number, ethertype: number, to: Buffer): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16LE(AF_PACKET, 0);
  b.writeUInt16BE(ethertype, 2);
  b.writeInt32LE(ifindex, 4);
  b.writeUInt16LE(ARPHRD_ETHER, 8);
  b.writeUInt8(6, 11);
  to.copy(b, 12);
  return b;
}

/** Sends a whole Ethernet frame (its own first 6 bytes are the destination) out of the socket's link. */
function sendFrame(s: PacketSocket, frame: Buffer): void {
  sendto(s.fd, frame, linkLayerAddress(s.ifindex, s.ethertype, frame.subarray(0, 6)));
}

/** One frame into `buf`, or 0 when none is waiting. */
export function receiveFrame(fd: number, buf: Buffer): number {
  try {
    return recv(fd, buf);
  } catch (e) {
    if (e instanceof SystemCallError && e.errno === Errno.EAGAIN) return 0;
    throw e;
  }
}

/**
 * A probe from `link` of `netns`: the frame `probe(link's MAC)` sent at once and again halfway through `timeoutMs`
 * (in case the first was lost), and the stations `claimant` names in the frames heard meanwhile (a MAC, or
 * undefined for a frame that claims nothing), deduplicated, in the order heard; the link's own MAC is never one.
 */
export async function probeWith(
  netns: string,
  link: string,
  ethertype: number,
  probe: (ownMac: string) => Buffer,
  timeoutMs: number,
  claimant: (frame: Buffer) => string | undefined,
  signal?: AbortSignal,
): Promise<string[]> {
  const s = packetSocket(netns, link, ethertype, true);
  try {
    const frame = probe(s.mac);
    const start = Date.now();
    sendFrame(s, frame);
    let second = false;
    const heard: string[] = [];
    const buf = Buffer.alloc(2048);
    for (let read = 0; Date.now() - start < timeoutMs; ) {
      signal?.throwIfAborted();
      if (!second && Date.now() - start >= timeoutMs / 2) {
        sendFrame(s, frame);
        second = true;
      }
      const n = receiveFrame(s.fd, buf);
      if (n === 0) {
        await sleep(POLL_MS);
        continue;
      }
      const mac = claimant(buf.subarray(0, n));
      if (mac !== undefined && mac !== s.mac && !heard.includes(mac)) heard.push(mac);
      if (++read % YIELD_EVERY === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return heard;
  } finally {
    await closeFdAsync(s.fd);
  }
}

/** `count` copies of `frame` from `link` of `netns`, `intervalMs` apart. */
export async function sendRepeated(netns: string, link: string, ethertype: number, frame: Buffer, count: number, intervalMs: number, signal?: AbortSignal): Promise<void> {
  const s = packetSocket(netns, link, ethertype, false);
  try {
    for (let i = 0; i < count; i++) {
      if (i > 0) await sleep(intervalMs, undefined, { signal });
      sendFrame(s, frame);
    }
  } finally {
    await closeFdAsync(s.fd);
  }
}
