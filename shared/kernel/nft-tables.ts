/**
 * nftables tables of a network namespace, listed and deleted over netlink (NETLINK_NETFILTER), so that no `nft`
 * binary is needed (CRIU links libnftables; the host may have no nft at all). Used for the lock CRIU's
 * `--network-lock nftables` leaves behind a `--leave-stopped` dump: `table inet CRIU-<run id>`.
 *
 * Namespaces are named by an nsfs path (`/proc/PID/ns/net`, `/proc/thread-self/ns/net` for this one's); the
 * socket is made inside the namespace (netns-socket.ts), then used from here. Every receive is bounded by
 * SO_RCVTIMEO (netlink.ts).
 */
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName, sendto } from '../native/libc.js';
import { closeFd } from '../native/ptrace.js';
import {
  NETLINK_KERNEL,
  netlinkErrno,
  netlinkMessage,
  netlinkSocketIn,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  receiveNetlink,
  stringAttr,
} from './netlink.js';

const NETLINK_NETFILTER = 12;

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

/** A netlink-netfilter socket in the network namespace `netns` names. */
const netfilterSocketIn = (netns: string): number => netlinkSocketIn(netns, NETLINK_NETFILTER);

/** A message of nfnetlink: the header, struct nfgenmsg (family, version 0, res_id big-endian), attributes. */
function message(type: number, flags: number, seq: number, family: number, resId: number, attrs: Buffer = Buffer.alloc(0)): Buffer {
  const body = Buffer.alloc(4 + attrs.length);
  body.writeUInt8(family, 0);
  body.writeUInt16BE(resId, 2);
  attrs.copy(body, 4);
  return netlinkMessage(type, flags, seq, body);
}

/** The nftables tables of the network namespace `netns` names. */
export function listNftTables(netns: string): NftTable[] {
  const fd = netfilterSocketIn(netns);
  try {
    const seq = 1;
    sendto(fd, message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, 0), NETLINK_KERNEL);
    const tables: NftTable[] = [];
    receiveNetlink(fd, (m) => {
      if (m.type === NLMSG_DONE) return true;
      if (m.type === NLMSG_ERROR) {
        const errno = netlinkErrno(m);
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
    sendto(fd, batch, NETLINK_KERNEL);
    let errno = 0;
    receiveNetlink(fd, (m) => {
      if (m.type !== NLMSG_ERROR || m.seq !== seq) return false;
      errno = netlinkErrno(m);
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
