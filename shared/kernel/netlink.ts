/**
 * The netlink framing Ferry's kernel ports share (nft-tables.ts over NETLINK_NETFILTER, rtnetlink.ts over
 * NETLINK_ROUTE): messages and attributes built and parsed by hand, no library. Every receive is bounded by
 * the socket's SO_RCVTIMEO (EAGAIN when it passes); sockets are made in a namespace by netns-socket.ts.
 */
import { closeFd } from '../native/ptrace.js';
import { recv, setsockopt, SOL_SOCKET, SO_RCVTIMEO } from '../native/libc.js';
import { socketIn } from './netns-socket.js';

const AF_NETLINK = 16;
const SOCK_RAW_CLOEXEC = 3 | 0x80000;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
const RECV_TIMEOUT_MS = 2_000;

/** sockaddr_nl of the kernel (pid 0, no groups): where every request goes. */
export const NETLINK_KERNEL = Buffer.alloc(12);
NETLINK_KERNEL.writeUInt16LE(AF_NETLINK, 0);

export interface NetlinkMessage {
  type: number;
  seq: number;
  /** What follows the 16-byte header. */
  body: Buffer;
}

/** A netlink socket of `protocol` in the network namespace `netns` names, receives bounded. Close it (closeFd). */
export function netlinkSocketIn(netns: string, protocol: number): number {
  const fd = socketIn(netns, AF_NETLINK, SOCK_RAW_CLOEXEC, protocol);
  try {
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(Math.floor(RECV_TIMEOUT_MS / 1000)), 0);
    tv.writeBigInt64LE(BigInt((RECV_TIMEOUT_MS % 1000) * 1000), 8);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv);
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

const align4 = (n: number): number => (n + 3) & ~3;

/** One message: the header, then `body` (a fixed struct followed by attributes), padded. */
export function netlinkMessage(type: number, flags: number, seq: number, body: Buffer): Buffer {
  const b = Buffer.alloc(16 + align4(body.length));
  b.writeUInt32LE(16 + body.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  body.copy(b, 16);
  return b;
}

/** One attribute (struct nlattr), padded to 4 bytes. */
export function netlinkAttr(type: number, value: Buffer): Buffer {
  const b = Buffer.alloc(align4(4 + value.length));
  b.writeUInt16LE(4 + value.length, 0);
  b.writeUInt16LE(type, 2);
  value.copy(b, 4);
  return b;
}

export const stringAttr = (type: number, value: string): Buffer => netlinkAttr(type, Buffer.from(`${value}\0`));

/** The attributes of `buf` from `offset` on, by type (the nested and byte-order flags masked off); the last
 * of a type wins. */
export function parseAttrs(buf: Buffer, offset: number): Map<number, Buffer> {
  const attrs = new Map<number, Buffer>();
  for (let off = offset; off + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    attrs.set(buf.readUInt16LE(off + 2) & 0x3fff, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return attrs;
}

export const attrString = (b: Buffer | undefined): string | undefined => b?.toString().replace(/\0+$/, '');

/** Reads messages until `done` says so; bounded by the socket's receive timeout (EAGAIN) on every read. */
export function receiveNetlink(fd: number, done: (m: NetlinkMessage) => boolean): void {
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    const n = recv(fd, buf);
    for (let off = 0; off + 16 <= n; ) {
      const len = buf.readUInt32LE(off);
      if (len < 16) return;
      if (done({ type: buf.readUInt16LE(off + 4), seq: buf.readUInt32LE(off + 8), body: Buffer.from(buf.subarray(off + 16, off + len)) })) return;
      off += align4(len);
    }
  }
}

/** The errno of an NLMSG_ERROR message (0 for an acknowledgement). */
export const netlinkErrno = (m: NetlinkMessage): number => -m.body.readInt32LE(0);
