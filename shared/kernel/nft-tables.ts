/**
 * nftables tables of a network namespace, listed and deleted over netlink (NETLINK_NETFILTER), so that no `nft`
 * binary is needed (CRIU links libnftables; the host may have no nft at all). Used for the lock CRIU's
 * `--network-lock nftables` leaves behind a `--leave-stopped` dump: `table inet CRIU-<run id>`.
 *
 * Namespaces are named by an nsfs path (`/proc/PID/ns/net`, `/proc/thread-self/ns/net` for this one's). The
 * socket is opened inside the namespace (setns of this thread and straight back: a
 * netlink socket stays in the namespace it was made in), then used from here. Every receive is bounded by
 * SO_RCVTIMEO.
 */
import { openSync, closeSync, statSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName, recv, sendto, setns, setsockopt, socket, SOL_SOCKET, SO_RCVTIMEO } from '../native/libc.js';
import { closeFd } from '../native/ptrace.js';

const AF_NETLINK = 16;
const SOCK_RAW_CLOEXEC = 3 | 0x80000;
const NETLINK_NETFILTER = 12;
const CLONE_NEWNET = 0x40000000;

const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NFNL_MSG_BATCH_BEGIN = 16;
const NFNL_MSG_BATCH_END = 17;
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWTABLE = 0;
const NFT_MSG_GETTABLE = 1;
const NFT_MSG_DELTABLE = 2;
const NLM_F_CREATE = 0x400;
const NFTA_TABLE_NAME = 1;

/** The families `nft` names (NFPROTO_*). */
const FAMILIES: Record<number, string> = { 1: 'inet', 2: 'ip', 3: 'arp', 5: 'netdev', 7: 'bridge', 10: 'ip6' };
const FAMILY_NUMBER: Record<string, number> = Object.fromEntries(Object.entries(FAMILIES).map(([n, f]) => [f, Number(n)]));

export interface NftTable {
  family: string;
  name: string;
}

const RECV_TIMEOUT_MS = 2_000;

/** A netlink-netfilter socket in the network namespace `target` names (no setns when it is this thread's). */
function netfilterSocketIn(target: string): number {
  const here = '/proc/thread-self/ns/net';
  const open = (): number => {
    const fd = socket(AF_NETLINK, SOCK_RAW_CLOEXEC, NETLINK_NETFILTER);
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(Math.floor(RECV_TIMEOUT_MS / 1000)), 0);
    tv.writeBigInt64LE(BigInt((RECV_TIMEOUT_MS % 1000) * 1000), 8);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv);
    return fd;
  };
  if (statSync(target).ino === statSync(here).ino) return open();
  const back = openSync(here, 'r');
  const into = openSync(target, 'r');
  try {
    setns(into, CLONE_NEWNET);
    try {
      return open();
    } finally {
      // Failing here would leave this thread (node's main one) in the task's namespace: nothing may swallow it.
      setns(back, CLONE_NEWNET);
    }
  } finally {
    closeSync(into);
    closeSync(back);
  }
}

function message(type: number, flags: number, seq: number, family: number, resId: number, attrs: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(16 + 4 + attrs.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt8(family, 16);
  b.writeUInt16BE(resId, 18);
  attrs.copy(b, 20);
  return b;
}

function stringAttr(type: number, value: string): Buffer {
  const s = Buffer.from(`${value}\0`);
  const b = Buffer.alloc((4 + s.length + 3) & ~3);
  b.writeUInt16LE(4 + s.length, 0);
  b.writeUInt16LE(type, 2);
  s.copy(b, 4);
  return b;
}

const KERNEL = Buffer.alloc(12);
KERNEL.writeUInt16LE(AF_NETLINK, 0);

interface NetlinkMessage {
  type: number;
  seq: number;
  body: Buffer;
}

/** Reads messages until `done` says so; bounded by the socket's receive timeout (EAGAIN) on every read. */
function receive(fd: number, done: (m: NetlinkMessage) => boolean): void {
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    const n = recv(fd, buf);
    for (let off = 0; off + 16 <= n; ) {
      const len = buf.readUInt32LE(off);
      if (len < 16) return;
      if (done({ type: buf.readUInt16LE(off + 4), seq: buf.readUInt32LE(off + 8), body: buf.subarray(off + 16, off + len) })) return;
      off += (len + 3) & ~3;
    }
  }
}

/** The errno of an NLMSG_ERROR message (0 for an acknowledgement). */
const errorOf = (m: NetlinkMessage): number => -m.body.readInt32LE(0);

/** The nftables tables of the network namespace `netns` names. */
export function listNftTables(netns: string): NftTable[] {
  const fd = netfilterSocketIn(netns);
  try {
    const seq = 1;
    sendto(fd, message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, 0), KERNEL);
    const tables: NftTable[] = [];
    receive(fd, (m) => {
      if (m.type === NLMSG_DONE) return true;
      if (m.type === NLMSG_ERROR) {
        const errno = errorOf(m);
        if (errno !== 0) throw new SystemCallError('netlink GETTABLE', errno, errnoName(errno), netns);
        return true;
      }
      if (m.type !== ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE)) return false;
      const family = FAMILIES[m.body.readUInt8(0)] ?? `family ${m.body.readUInt8(0)}`;
      for (let off = 4; off + 4 <= m.body.length; ) {
        const len = m.body.readUInt16LE(off);
        if (len < 4) break;
        if ((m.body.readUInt16LE(off + 2) & 0x3fff) === NFTA_TABLE_NAME) {
          tables.push({ family, name: m.body.subarray(off + 4, off + len).toString().replace(/\0+$/, '') });
        }
        off += (len + 3) & ~3;
      }
      return false;
    });
    return tables;
  } finally {
    closeFd(fd);
  }
}

/** One table message (NEWTABLE or DELTABLE) in a batch; returns the kernel's errno for it (0: done). */
function tableBatch(netns: string, table: NftTable, type: number, flags: number): number {
  const family = FAMILY_NUMBER[table.family];
  if (family === undefined) throw new Error(`unknown nftables family ${table.family}`);
  const fd = netfilterSocketIn(netns);
  try {
    const seq = 2;
    const batch = Buffer.concat([
      message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, NFNL_SUBSYS_NFTABLES),
      message((NFNL_SUBSYS_NFTABLES << 8) | type, NLM_F_REQUEST | NLM_F_ACK | flags, seq, family, 0, stringAttr(NFTA_TABLE_NAME, table.name)),
      message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3, 0, NFNL_SUBSYS_NFTABLES),
    ]);
    sendto(fd, batch, KERNEL);
    let errno = 0;
    receive(fd, (m) => {
      if (m.type !== NLMSG_ERROR || m.seq !== seq) return false;
      errno = errorOf(m);
      return true;
    });
    return errno;
  } finally {
    closeFd(fd);
  }
}

/** Deletes `table FAMILY NAME` in the network namespace `netns` names; false when there is no such table. */
export function deleteNftTable(netns: string, table: NftTable): boolean {
  const errno = tableBatch(netns, table, NFT_MSG_DELTABLE, 0);
  if (errno === 2) return false; // ENOENT
  if (errno !== 0) throw new SystemCallError('netlink DELTABLE', errno, errnoName(errno), `table ${table.family} ${table.name}`);
  return true;
}

/** Adds an empty `table FAMILY NAME` (the paired verb; tests make CRIU-like locks with it). */
export function addNftTable(netns: string, table: NftTable): void {
  const errno = tableBatch(netns, table, NFT_MSG_NEWTABLE, NLM_F_CREATE);
  if (errno !== 0) throw new SystemCallError('netlink NEWTABLE', errno, errnoName(errno), `table ${table.family} ${table.name}`);
}
