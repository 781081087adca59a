/**
 * nftables tables and base chains of a network namespace, listed, added and deleted over netlink
 * (NETLINK_NETFILTER), so that no `nft` binary is needed (CRIU links libnftables; the host may have no nft at
 * all). Used for the lock CRIU's `--network-lock nftables` leaves behind a `--leave-stopped` dump
 * (`table inet CRIU-<run id>`) and for the hold of a task's own network namespace (nft-hold.ts). Changes go in
 * one batch, which the kernel applies whole or not at all.
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
const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_GETCHAIN = 4;
const NLM_F_CREATE = 0x400;
const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_CHAIN_HOOK = 4;
const NFTA_CHAIN_POLICY = 5;
const NFTA_CHAIN_TYPE = 7;
const NFTA_HOOK_HOOKNUM = 1;
const NFTA_HOOK_PRIORITY = 2;
const NLA_F_NESTED = 0x8000;

/** The families `nft` names (NFPROTO_*). */
const FAMILIES: Record<number, string> = { 1: 'inet', 2: 'ip', 3: 'arp', 5: 'netdev', 7: 'bridge', 10: 'ip6' };
const FAMILY_NUMBER: Record<string, number> = Object.fromEntries(Object.entries(FAMILIES).map(([n, f]) => [f, Number(n)]));

export interface NftTable {
  family: string;
  name: string;
}

/** A base chain: attached to a hook, with a verdict for what no rule decides. */
export interface NftChain {
  table: NftTable;
  name: string;
  /** The hook's name in its family (`input`, `output`); hook numbers differ by family (below). */
  hook: string;
  priority: number;
  policy: 'accept' | 'drop';
}

/** Hook numbers by family: NF_INET_* for ip, ip6 and inet; NF_ARP_* for arp. */
const HOOKS: Record<string, Record<string, number>> = {
  inet: { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4 },
  arp: { input: 0, output: 1, forward: 2 },
};
HOOKS['ip'] = HOOKS['inet']!;
HOOKS['ip6'] = HOOKS['inet']!;
const POLICIES = { drop: 0, accept: 1 } as const;

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

function attr(type: number, value: Buffer): Buffer {
  const b = Buffer.alloc((4 + value.length + 3) & ~3);
  b.writeUInt16LE(4 + value.length, 0);
  b.writeUInt16LE(type, 2);
  value.copy(b, 4);
  return b;
}

function u32Attr(type: number, value: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeInt32BE(value, 0); // netlink-netfilter numbers are big-endian; a priority may be negative
  return attr(type, v);
}

/** The attributes of a message (after its 4-byte nfgenmsg), by type; a nested attribute's value is its payload. */
function attrsOf(body: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + 4 <= body.length; ) {
    const len = body.readUInt16LE(off);
    if (len < 4) break;
    out.set(body.readUInt16LE(off + 2) & 0x3fff, body.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

const cString = (b: Buffer | undefined): string | undefined => b?.toString().replace(/\0+$/, '');

const stringAttr = (type: number, value: string): Buffer => attr(type, Buffer.from(`${value}\0`));

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

/** A dump request (GETTABLE, GETCHAIN) of every family; `each` sees the body of every answer of type `answer`. */
function dump(netns: string, request: number, answer: number, what: string, each: (body: Buffer) => void): void {
  const fd = netfilterSocketIn(netns);
  try {
    sendto(fd, message((NFNL_SUBSYS_NFTABLES << 8) | request, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, 0), KERNEL);
    receive(fd, (m) => {
      if (m.type === NLMSG_DONE) return true;
      if (m.type === NLMSG_ERROR) {
        const errno = errorOf(m);
        if (errno !== 0) throw new SystemCallError(`netlink ${what}`, errno, errnoName(errno), netns);
        return true;
      }
      if (m.type === ((NFNL_SUBSYS_NFTABLES << 8) | answer)) each(m.body);
      return false;
    });
  } finally {
    closeFd(fd);
  }
}

const familyOf = (body: Buffer): string => FAMILIES[body.readUInt8(0)] ?? `family ${body.readUInt8(0)}`;

/** The nftables tables of the network namespace `netns` names. */
export function listNftTables(netns: string): NftTable[] {
  const tables: NftTable[] = [];
  dump(netns, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, 'GETTABLE', (body) => {
    const name = cString(attrsOf(body.subarray(4)).get(NFTA_TABLE_NAME));
    if (name !== undefined) tables.push({ family: familyOf(body), name });
  });
  return tables;
}

/** The base chains (those on a hook) of the network namespace `netns` names, every family's. */
export function listNftBaseChains(netns: string): NftChain[] {
  const chains: NftChain[] = [];
  dump(netns, NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, 'GETCHAIN', (body) => {
    const family = familyOf(body);
    const a = attrsOf(body.subarray(4));
    const table = cString(a.get(NFTA_CHAIN_TABLE));
    const name = cString(a.get(NFTA_CHAIN_NAME));
    const hookAttrs = a.get(NFTA_CHAIN_HOOK);
    const policy = a.get(NFTA_CHAIN_POLICY);
    if (table === undefined || name === undefined || hookAttrs === undefined || policy === undefined || policy.length < 4) return;
    const h = attrsOf(hookAttrs);
    const hookNum = h.get(NFTA_HOOK_HOOKNUM)?.readUInt32BE(0);
    const hook = Object.entries(HOOKS[family] ?? {}).find(([, n]) => n === hookNum)?.[0] ?? `hook ${hookNum}`;
    chains.push({
      table: { family, name: table },
      name,
      hook,
      priority: h.get(NFTA_HOOK_PRIORITY)?.readInt32BE(0) ?? 0,
      policy: policy.readUInt32BE(0) === POLICIES.accept ? 'accept' : 'drop',
    });
  });
  return chains;
}

/** The messages of a new table (NEWTABLE) with its base chains (NEWCHAIN, filter type), for one nftBatch. */
export function newTableWithChains(table: NftTable, chains: readonly Omit<NftChain, 'table'>[]): NftBatchMessage[] {
  return [
    tableMessage(table, NFT_MSG_NEWTABLE, NLM_F_CREATE),
    ...chains.map((c) => {
      const hookNum = HOOKS[table.family]?.[c.hook];
      if (hookNum === undefined) throw new Error(`no hook ${c.hook} in nftables family ${table.family}`);
      const hook = attr(NFTA_CHAIN_HOOK | NLA_F_NESTED, Buffer.concat([u32Attr(NFTA_HOOK_HOOKNUM, hookNum), u32Attr(NFTA_HOOK_PRIORITY, c.priority)]));
      return {
        type: NFT_MSG_NEWCHAIN,
        flags: NLM_F_CREATE,
        family: table.family,
        attrs: Buffer.concat([stringAttr(NFTA_CHAIN_TABLE, table.name), stringAttr(NFTA_CHAIN_NAME, c.name), hook, u32Attr(NFTA_CHAIN_POLICY, POLICIES[c.policy]), stringAttr(NFTA_CHAIN_TYPE, 'filter')]),
      };
    }),
  ];
}

/** The message that deletes a table with everything in it, for one nftBatch. */
export const deleteTableMessage = (table: NftTable): NftBatchMessage => tableMessage(table, NFT_MSG_DELTABLE, 0);

/** One message of a batch: its type (NFT_MSG_*), extra flags, family and attributes. */
export interface NftBatchMessage {
  type: number;
  flags: number;
  family: string;
  attrs: Buffer;
}

function familyNumber(family: string): number {
  const n = FAMILY_NUMBER[family];
  if (n === undefined) throw new Error(`unknown nftables family ${family}`);
  return n;
}

/**
 * One nftables transaction (a batch: the kernel applies all of its messages or none); returns the errno of the
 * first message the kernel refused (0: all applied). Every message asks for an ack, so the last ack ends it.
 */
export function nftBatch(netns: string, messages: readonly NftBatchMessage[]): number {
  const fd = netfilterSocketIn(netns);
  try {
    const first = 2;
    const last = first + messages.length - 1;
    const batch = Buffer.concat([
      message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, NFNL_SUBSYS_NFTABLES),
      ...messages.map((m, i) => message((NFNL_SUBSYS_NFTABLES << 8) | m.type, NLM_F_REQUEST | NLM_F_ACK | m.flags, first + i, familyNumber(m.family), 0, m.attrs)),
      message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1, 0, NFNL_SUBSYS_NFTABLES),
    ]);
    sendto(fd, batch, KERNEL);
    let errno = 0;
    // A refused message aborts the transaction: its error is the last answer; else every message's ack comes.
    receive(fd, (m) => {
      if (m.type !== NLMSG_ERROR || m.seq < first || m.seq > last) return false;
      const e = errorOf(m);
      if (e !== 0) errno = e;
      return e !== 0 || m.seq === last;
    });
    return errno;
  } finally {
    closeFd(fd);
  }
}

const tableMessage = (table: NftTable, type: number, flags: number): NftBatchMessage => ({ type, flags, family: table.family, attrs: stringAttr(NFTA_TABLE_NAME, table.name) });

/** One table message (NEWTABLE or DELTABLE) in a batch of its own; the kernel's errno for it (0: done). */
function tableBatch(netns: string, table: NftTable, type: number, flags: number): number {
  return nftBatch(netns, [tableMessage(table, type, flags)]);
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
