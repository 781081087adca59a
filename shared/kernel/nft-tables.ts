/**
 * nftables tables and base chains of a network namespace, listed, added and deleted over netlink
 * (NETLINK_NETFILTER), so that no `nft` binary is needed (CRIU links libnftables; the host may have no nft at
 * all). Used for the lock CRIU's `--network-lock nftables` leaves behind a `--leave-stopped` dump
 * (`table inet CRIU-<run id>`) and for the hold of a task's own network namespace (nft-hold.ts). Changes go in
 * one batch, which the kernel applies whole or not at all.
 *
 * Namespaces are named by an nsfs path (`/proc/PID/ns/net`, `/proc/thread-self/ns/net` for this one's); the
 * socket is made inside the namespace (netns-socket.ts), then used from here. Every receive is bounded by
 * SO_RCVTIMEO (netlink.ts).
 */
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName, sendto } from '../native/libc.js';
import { closeFd } from '../native/ptrace.js';
import {
  attrString,
  NETLINK_KERNEL,
  netlinkAttr,
  netlinkErrno,
  netlinkMessage,
  netlinkSocketIn,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseAttrs,
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
const NFT_MSG_NEWCHAIN = 3;
const NFT_MSG_GETCHAIN = 4;
const NFT_MSG_NEWRULE = 6;
const NFT_MSG_GETRULE = 7;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_CHAIN_HOOK = 4;
const NFTA_CHAIN_POLICY = 5;
const NFTA_CHAIN_TYPE = 7;
const NFTA_HOOK_HOOKNUM = 1;
const NFTA_HOOK_PRIORITY = 2;
const NLA_F_NESTED = 0x8000;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_LIST_ELEM = 1;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_IMMEDIATE_DREG = 1;
const NFTA_IMMEDIATE_DATA = 2;
const NFTA_DATA_VERDICT = 2;
const NFTA_VERDICT_CODE = 1;
const NFT_REG_VERDICT = 0;
const NF_ACCEPT = 1;

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
const INET_HOOKS = { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4 };
const HOOKS: Record<string, Record<string, number>> = { inet: INET_HOOKS, ip: INET_HOOKS, ip6: INET_HOOKS, arp: { input: 0, output: 1, forward: 2 } };
const POLICIES = { drop: 0, accept: 1 } as const;

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

function u32Attr(type: number, value: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeInt32BE(value, 0); // netlink-netfilter numbers are big-endian; a priority may be negative
  return netlinkAttr(type, v);
}

/** A dump request (GETTABLE, GETCHAIN) of every family; `each` sees the body of every answer of type `answer`. */
function dump(netns: string, request: number, answer: number, what: string, each: (body: Buffer) => void): void {
  const fd = netfilterSocketIn(netns);
  try {
    sendto(fd, message((NFNL_SUBSYS_NFTABLES << 8) | request, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, 0), NETLINK_KERNEL);
    receiveNetlink(fd, (m) => {
      if (m.type === NLMSG_DONE) return true;
      if (m.type === NLMSG_ERROR) {
        const errno = netlinkErrno(m);
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
    const name = attrString(parseAttrs(body, 4).get(NFTA_TABLE_NAME));
    if (name !== undefined) tables.push({ family: familyOf(body), name });
  });
  return tables;
}

/** The base chains (those on a hook) of the network namespace `netns` names, every family's. */
export function listNftBaseChains(netns: string): NftChain[] {
  const chains: NftChain[] = [];
  dump(netns, NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, 'GETCHAIN', (body) => {
    const family = familyOf(body);
    const a = parseAttrs(body, 4);
    const table = attrString(a.get(NFTA_CHAIN_TABLE));
    const name = attrString(a.get(NFTA_CHAIN_NAME));
    const hookAttrs = a.get(NFTA_CHAIN_HOOK);
    const policy = a.get(NFTA_CHAIN_POLICY);
    if (table === undefined || name === undefined || hookAttrs === undefined || policy === undefined || policy.length < 4) return;
    const h = parseAttrs(hookAttrs, 0);
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

/** How many rules each chain of `table` holds, by chain name (chains without rules are absent). */
export function countNftRules(netns: string, table: NftTable): Map<string, number> {
  const counts = new Map<string, number>();
  dump(netns, NFT_MSG_GETRULE, NFT_MSG_NEWRULE, 'GETRULE', (body) => {
    const a = parseAttrs(body, 4);
    const chain = attrString(a.get(NFTA_RULE_CHAIN));
    if (familyOf(body) !== table.family || attrString(a.get(NFTA_RULE_TABLE)) !== table.name || chain === undefined) return;
    counts.set(chain, (counts.get(chain) ?? 0) + 1);
  });
  return counts;
}

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
    sendto(fd, batch, NETLINK_KERNEL);
    let errno = 0;
    // A refused message aborts the transaction: its error is the answer that matters; else every message's ack comes.
    // A batch refused whole (no CAP_NET_ADMIN, no nf_tables) gets its error on BATCH_BEGIN's seq 1: that ends it too,
    // else the wait runs out SO_RCVTIMEO (inside the freeze) and says EAGAIN.
    receiveNetlink(fd, (m) => {
      if (m.type !== NLMSG_ERROR || m.seq < 1 || m.seq > last) return false;
      const e = netlinkErrno(m);
      if (e !== 0) errno = e;
      return e !== 0 || m.seq === last;
    });
    return errno;
  } finally {
    closeFd(fd);
  }
}

const tableMessage = (table: NftTable, type: number, flags: number): NftBatchMessage => ({ type, flags, family: table.family, attrs: stringAttr(NFTA_TABLE_NAME, table.name) });

/** The messages of a new table (NEWTABLE) with its base chains (NEWCHAIN, filter type), for one nftBatch. */
export function newTableWithChains(table: NftTable, chains: readonly Omit<NftChain, 'table'>[]): NftBatchMessage[] {
  return [
    tableMessage(table, NFT_MSG_NEWTABLE, NLM_F_CREATE),
    ...chains.map((c) => {
      const hookNum = HOOKS[table.family]?.[c.hook];
      if (hookNum === undefined) throw new Error(`no hook ${c.hook} in nftables family ${table.family}`);
      const hook = netlinkAttr(NFTA_CHAIN_HOOK | NLA_F_NESTED, Buffer.concat([u32Attr(NFTA_HOOK_HOOKNUM, hookNum), u32Attr(NFTA_HOOK_PRIORITY, c.priority)]));
      return {
        type: NFT_MSG_NEWCHAIN,
        flags: NLM_F_CREATE,
        family: table.family,
        attrs: Buffer.concat([stringAttr(NFTA_CHAIN_TABLE, table.name), stringAttr(NFTA_CHAIN_NAME, c.name), hook, u32Attr(NFTA_CHAIN_POLICY, POLICIES[c.policy]), stringAttr(NFTA_CHAIN_TYPE, 'filter')]),
      };
    }),
  ];
}

/**
 * The message that appends `accept` (one immediate verdict) to a chain of `table`, for one nftBatch. Adding a
 * rule changes no hook: it costs no RCU grace period, where deleting a base chain (or changing its policy)
 * waits for one (about 10 ms here).
 */
export function acceptRuleMessage(table: NftTable, chain: string): NftBatchMessage {
  const verdict = netlinkAttr(NFTA_DATA_VERDICT | NLA_F_NESTED, u32Attr(NFTA_VERDICT_CODE, NF_ACCEPT));
  const data = netlinkAttr(NFTA_EXPR_DATA | NLA_F_NESTED, Buffer.concat([u32Attr(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT), netlinkAttr(NFTA_IMMEDIATE_DATA | NLA_F_NESTED, verdict)]));
  const expr = netlinkAttr(NFTA_LIST_ELEM | NLA_F_NESTED, Buffer.concat([stringAttr(NFTA_EXPR_NAME, 'immediate'), data]));
  return {
    type: NFT_MSG_NEWRULE,
    flags: NLM_F_CREATE | NLM_F_APPEND,
    family: table.family,
    attrs: Buffer.concat([stringAttr(NFTA_RULE_TABLE, table.name), stringAttr(NFTA_RULE_CHAIN, chain), netlinkAttr(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, expr)]),
  };
}

/** The message that deletes `table FAMILY NAME` with everything in it, for one nftBatch. */
export const deleteTableMessage = (table: NftTable): NftBatchMessage => tableMessage(table, NFT_MSG_DELTABLE, 0);

/** Deletes `table FAMILY NAME` in the network namespace `netns` names; false when there is no such table. */
export function deleteNftTable(netns: string, table: NftTable): boolean {
  const errno = nftBatch(netns, [tableMessage(table, NFT_MSG_DELTABLE, 0)]);
  if (errno === 2) return false; // ENOENT
  if (errno !== 0) throw new SystemCallError('netlink DELTABLE', errno, errnoName(errno), `table ${table.family} ${table.name}`);
  return true;
}

/** Adds an empty `table FAMILY NAME` (the paired verb; tests make CRIU-like locks with it). */
export function addNftTable(netns: string, table: NftTable): void {
  const errno = nftBatch(netns, [tableMessage(table, NFT_MSG_NEWTABLE, NLM_F_CREATE)]);
  if (errno !== 0) throw new SystemCallError('netlink NEWTABLE', errno, errnoName(errno), `table ${table.family} ${table.name}`);
}
