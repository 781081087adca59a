/**
 * A network namespace's links, IPv4 and IPv6 addresses and namespace ids, read over NETLINK_ROUTE (the `ip` binary is
 * not needed to read). Namespaces are named by an nsfs path (netns-socket.ts).
 */
import { closeSync, openSync } from 'node:fs';
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName, sendto } from '../native/libc.js';
import { closeFd } from '../native/ptrace.js';
import { formatIpv6, ipv6Bytes, isLinkLocal6 } from './ipv6.js';
import { macOfBytes } from './mac-address.js';
import {
  attrString,
  NETLINK_KERNEL,
  netlinkAttr,
  netlinkErrno,
  netlinkMessage,
  netlinkSocketIn,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  parseAttrs,
  receiveNetlink,
} from './netlink.js';

const NETLINK_ROUTE = 0;
const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_GETADDR = 22;
const RTM_NEWNSID = 88;
const RTM_GETNSID = 90;
const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_LINK = 5;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;
const IFLA_LINK_NETNSID = 37;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const NETNSA_NSID = 1;
const NETNSA_FD = 3;
const IFF_UP = 0x1;

export interface Link {
  ifindex: number;
  name: string;
  /** IFLA_INFO_KIND: veth, bridge, macvlan, ...; '' for a link without one (lo, a physical NIC). */
  kind: string;
  /** aa:bb:cc:dd:ee:ff, '' when the link has no hardware address. */
  mac: string;
  /** Administratively up. */
  up: boolean;
  /** IFLA_LINK: a veth's peer's ifindex (in linkNetnsId's namespace when that is set). */
  link?: number;
  /** IFLA_LINK_NETNSID: the namespace of the peer, as this namespace numbers it. */
  linkNetnsId?: number;
  /** IFLA_MASTER: the bridge (or bond) this link is enslaved to. */
  master?: number;
}

export interface Ipv4Address {
  ifindex: number;
  address: string;
  prefix: number;
}

/** The same shape; `address` in RFC 5952 text. */
export type Ipv6Address = Ipv4Address;

const macOf = (b: Buffer | undefined): string => (b && b.length === 6 ? macOfBytes(b) : '');

/** Sends one dump request and collects the bodies of its `want` messages. */
function dump(netns: string, type: number, body: Buffer, want: number): Buffer[] {
  const fd = netlinkSocketIn(netns, NETLINK_ROUTE);
  try {
    const seq = 1;
    sendto(fd, netlinkMessage(type, NLM_F_REQUEST | NLM_F_DUMP, seq, body), NETLINK_KERNEL);
    const out: Buffer[] = [];
    receiveNetlink(fd, (m) => {
      if (m.type === NLMSG_DONE) return true;
      if (m.type === NLMSG_ERROR) {
        const errno = netlinkErrno(m);
        if (errno !== 0) throw new SystemCallError(`netlink dump ${type}`, errno, errnoName(errno), netns);
        return true;
      }
      if (m.type === want) out.push(m.body);
      return false;
    });
    return out;
  } finally {
    closeFd(fd);
  }
}

/** Every link of the namespace `netns` names. */
export function listLinks(netns: string): Link[] {
  return dump(netns, RTM_GETLINK, Buffer.alloc(16), RTM_NEWLINK).map((body) => {
    const attrs = parseAttrs(body, 16);
    const info = attrs.get(IFLA_LINKINFO);
    const u32 = (t: number): number | undefined => attrs.get(t)?.readUInt32LE(0);
    const link: Link = {
      ifindex: body.readInt32LE(4),
      name: attrString(attrs.get(IFLA_IFNAME)) ?? '',
      kind: (info && attrString(parseAttrs(info, 0).get(IFLA_INFO_KIND))) ?? '',
      mac: macOf(attrs.get(IFLA_ADDRESS)),
      up: (body.readUInt32LE(8) & IFF_UP) !== 0,
    };
    const peer = u32(IFLA_LINK);
    const nsid = attrs.get(IFLA_LINK_NETNSID)?.readInt32LE(0);
    const master = u32(IFLA_MASTER);
    if (peer !== undefined) link.link = peer;
    if (nsid !== undefined) link.linkNetnsId = nsid;
    if (master !== undefined) link.master = master;
    return link;
  });
}

function listAddresses(netns: string, family: number, bytes: number, format: (a: Buffer) => string): Ipv4Address[] {
  const req = Buffer.alloc(8);
  req.writeUInt8(family, 0);
  return dump(netns, RTM_GETADDR, req, RTM_NEWADDR)
    .filter((body) => body.readUInt8(0) === family)
    .flatMap((body) => {
      const attrs = parseAttrs(body, 8);
      // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on a point-to-point link.
      const a = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
      return a && a.length === bytes ? [{ ifindex: body.readUInt32LE(4), address: format(a), prefix: body.readUInt8(1) }] : [];
    });
}

/** Every IPv4 address of the namespace `netns` names. */
export const listIpv4Addresses = (netns: string): Ipv4Address[] => listAddresses(netns, AF_INET, 4, (a) => [...a].join('.'));

/**
 * Every IPv6 address of the namespace `netns` names but the link-local ones (fe80::/10, which every link makes
 * for itself: no identity of the task's), in RFC 5952 text.
 */
export const listIpv6Addresses = (netns: string): Ipv6Address[] => listAddresses(netns, AF_INET6, 16, formatIpv6).filter((a) => !isLinkLocal6(ipv6Bytes(a.address)));

/**
 * The id the namespace `netns` gives the namespace `target` (RTM_GETNSID by fd), or undefined when it has
 * given it none. The kernel assigns ids when it reports a link whose peer is in the other namespace.
 */
export function netnsIdIn(netns: string, target: string): number | undefined {
  const targetFd = openSync(target, 'r');
  const fd = netlinkSocketIn(netns, NETLINK_ROUTE);
  try {
    const fdValue = Buffer.alloc(4);
    fdValue.writeUInt32LE(targetFd, 0);
    const body = Buffer.concat([Buffer.from([AF_UNSPEC, 0, 0, 0]), netlinkAttr(NETNSA_FD, fdValue)]);
    const seq = 2;
    sendto(fd, netlinkMessage(RTM_GETNSID, NLM_F_REQUEST, seq, body), NETLINK_KERNEL);
    let id: number | undefined;
    receiveNetlink(fd, (m) => {
      if (m.type === NLMSG_ERROR) {
        const errno = netlinkErrno(m);
        if (errno !== 0) throw new SystemCallError('netlink GETNSID', errno, errnoName(errno), target);
        return true;
      }
      if (m.type !== RTM_NEWNSID) return false;
      const v = parseAttrs(m.body, 4).get(NETNSA_NSID)?.readInt32LE(0);
      id = v === undefined || v < 0 ? undefined : v;
      return true;
    });
    return id;
  } finally {
    closeFd(fd);
    closeSync(targetFd);
  }
}
