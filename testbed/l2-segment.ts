/**
 * Three "hosts" on one L2 segment, for tasks with their own network identity (`ferry run --net`, issue 16):
 *
 *   lan:  bridge lan0 ── up-a ─(veth)─ eth0 on ferry0 in A (10.77.n.1 on ferry0)
 *                     ── up-b ─(veth)─ eth0 on ferry0 in B (10.77.n.2 on ferry0)
 *                     ── up-c ─(veth)─ eth0 in C           (10.77.n.3, the client)
 *
 * A and B each hold a task bridge, `ferry0` (the name `ferry run --net` uses by default), that enslaves their
 * uplink; a task started on A joins ferry0 and is reachable from B and C through lan0, and its copy on B the
 * same way: the segment is what a rack's switch is. Addresses 10.77.n.100 and up are left for tasks.
 *
 * As in netns-hosts.ts: every veth is born with both ends inside our namespaces (nothing of this appears in the
 * host's network namespace), namespaces are entered with `nsenter --net=` (never `ip netns exec`, whose private
 * mount namespace CRIU refuses), A and B get certificates of their own CA (spiffe://e2e.ferry.test/ferry/src for
 * A, .../dst for B, each with its address as IP SAN, good as server and client) so that the agents talk over
 * the segment, and namespaces of a run whose process is gone are swept by name. IPv6 is off in every namespace
 * unless asked for (`{ ipv6: true }`): its duplicate address detection and router solicitations would be noise
 * on a segment that tests watch. With it, the segment also has fd77:n::/64 of our own, addressed like the IPv4
 * one (A fd77:n::1, B fd77:n::2 on ferry0, C fd77:n::3, tasks fd77:n::100 and up), without DAD, and its bridges
 * flood multicast (no MLD snooping: a DAD probe's solicited-node group reaches every station at once).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Host, HostPair } from './netns-hosts.js';
import { addNetns, deleteNetns, ip, NETNS_DIR, runTool, sweepStaleNetns } from './netns-names.js';
import { testStateDir } from './temp-dirs.js';
import { createTestPki } from './test-pki.js';

const NAME_PATTERN = /^ferry-l(\d+)-\d+-(lan|a|b|c)$/;
/** The task bridge of A and B: `ferry run --net`'s default, so a task started there needs no --bridge. */
export const TASK_BRIDGE = 'ferry0';
const LAN_BRIDGE = 'lan0';
const UPLINK = 'eth0';

/** A namespace on the segment that is not an agent's host: the client C. */
export interface Station {
  /** Namespace name, as `ip netns list` shows it. */
  readonly name: string;
  /** /run/netns/NAME. */
  readonly netns: string;
  /** Its interface on the segment. */
  readonly link: string;
  /** Its IPv4 address, without the prefix length. */
  readonly address: string;
}

export interface L2SegmentOptions {
  /** IPv6 on the segment too (fd77:n::/64); default off. */
  ipv6?: boolean;
}

/** The segment's IPv6 addresses (with `{ ipv6: true }`), without the prefix length. */
export interface L2SegmentIpv6 {
  readonly a: string;
  readonly b: string;
  readonly c: string;
  readonly prefix: 64;
  /** The i-th task address, fd77:n::(100 + i) (the IPv4 one's digits, read as hex). */
  taskAddress(i: number): string;
}

export interface L2Segment extends HostPair {
  /** Host A (role src): ferry0 holds its address; `link` is ferry0. */
  readonly a: Host;
  /** Host B (role dst). */
  readonly b: Host;
  /** The client C. */
  readonly c: Station;
  /** The segment's switch namespace (/run/netns/NAME). */
  readonly lan: string;
  /** The n of 10.77.n.0/24. */
  readonly subnet: number;
  /** The prefix length of every address on the segment. */
  readonly prefix: 24;
  /** The task bridge's name on A and B. */
  readonly bridge: string;
  /** The i-th task address, 10.77.n.(100 + i), without the prefix length. */
  taskAddress(i: number): string;
  /** With `{ ipv6: true }` only. */
  readonly ipv6?: L2SegmentIpv6;
  /** The command prefix that runs a program inside a namespace of the segment. */
  enterStation(s: Station): string[];
  /** Deletes the four namespaces (every veth goes with them). Idempotent. */
  destroy(): Promise<void>;
}

let created = 0;

/** Creates the segment: ferry-l<pid>-<k>-{lan,a,b,c}. */
export async function createL2Segment(o: L2SegmentOptions = {}): Promise<L2Segment> {
  sweepStaleNetns(NAME_PATTERN);
  const k = created++;
  const subnet = ((process.pid * 11 + k) % 250) + 1;
  const base = `ferry-l${process.pid}-${k}`;
  const addr = (i: number): string => `10.77.${subnet}.${i}`;
  const addr6 = (i: number): string => `fd77:${subnet}::${i}`;
  const names = { lan: `${base}-lan`, a: `${base}-a`, b: `${base}-b`, c: `${base}-c` };
  const pki = await createTestPki(testStateDir(), 'e2e.ferry.test');
  const host = async (role: 'src' | 'dst', name: string, address: string): Promise<Host> => {
    const cert = await pki.issue(role, { ipAddresses: [address] });
    return { role, name, netns: join(NETNS_DIR, name), link: TASK_BRIDGE, address, tlsDir: join(cert.certFile, '..'), identity: cert.identity! };
  };
  let a: Host, b: Host;
  try {
    [a, b] = [await host('src', names.a, addr(1)), await host('dst', names.b, addr(2))];
  } catch (err) {
    pki.remove();
    throw err;
  }
  const c: Station = { name: names.c, netns: join(NETNS_DIR, names.c), link: UPLINK, address: addr(3) };

  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      const errors: unknown[] = [];
      for (const name of Object.values(names)) {
        await deleteNetns(name).catch((e: unknown) => errors.push(e));
      }
      pki.remove();
      if (errors.length > 0) throw errors[0];
    })();
    return destroyed;
  };

  try {
    for (const name of Object.values(names)) {
      await addNetns(name);
      const v6 = o.ipv6 ? 0 : 1;
      await runTool('nsenter', [`--net=${join(NETNS_DIR, name)}`, 'sysctl', '-qw', `net.ipv6.conf.all.disable_ipv6=${v6}`, `net.ipv6.conf.default.disable_ipv6=${v6}`]);
      await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    }
    const snooping = o.ipv6 ? ['mcast_snooping', '0'] : [];
    await bridge(names.lan, LAN_BRIDGE, snooping);
    for (const [tag, name] of [['a', names.a], ['b', names.b], ['c', names.c]] as const) {
      await ip(['link', 'add', `up-${tag}`, 'netns', names.lan, 'type', 'veth', 'peer', 'name', UPLINK, 'netns', name]);
      await ip(['-n', names.lan, 'link', 'set', `up-${tag}`, 'master', LAN_BRIDGE, 'up']);
    }
    for (const h of [a, b]) {
      await bridge(h.name, TASK_BRIDGE, snooping);
      await ip(['-n', h.name, 'link', 'set', UPLINK, 'master', TASK_BRIDGE, 'up']);
      await ip(['-n', h.name, 'addr', 'add', `${h.address}/24`, 'dev', TASK_BRIDGE]);
    }
    await ip(['-n', c.name, 'addr', 'add', `${c.address}/24`, 'dev', UPLINK]);
    if (o.ipv6) {
      for (const [name, link, i] of [[names.a, TASK_BRIDGE, 1], [names.b, TASK_BRIDGE, 2], [names.c, UPLINK, 3]] as const) {
        await ip(['-n', name, 'addr', 'add', `${addr6(i)}/64`, 'dev', link, 'nodad']);
      }
    }
    await ip(['-n', c.name, 'link', 'set', UPLINK, 'up']);
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }

  const enter = (h: Host | Station): string[] => ['nsenter', `--net=${h.netns}`];
  return {
    a,
    b,
    c,
    src: a,
    dst: b,
    peerOf: (h) => (h.name === a.name ? b : a),
    enter,
    enterStation: enter,
    lan: join(NETNS_DIR, names.lan),
    subnet,
    prefix: 24,
    bridge: TASK_BRIDGE,
    taskAddress: (i) => addr(100 + taskIndex(i)),
    ...(o.ipv6 && { ipv6: { a: addr6(1), b: addr6(2), c: addr6(3), prefix: 64 as const, taskAddress: (i: number) => addr6(100 + taskIndex(i)) } }),
    destroy,
  };
}

function taskIndex(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > 150) throw new Error(`task address index ${i} is outside 0..150`);
  return i;
}

/** A bridge that forwards at once (no STP, no forward delay: a port is usable when it is up), up. */
async function bridge(netns: string, name: string, extra: readonly string[]): Promise<void> {
  await ip(['-n', netns, 'link', 'add', name, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0', ...extra]);
  await ip(['-n', netns, 'link', 'set', name, 'up']);
}

/** The segment's namespaces of this process still present (what a test checks after destroy()). */
export function liveSegmentNamespaces(): string[] {
  try {
    return readdirSync(NETNS_DIR).filter((n) => NAME_PATTERN.exec(n)?.[1] === String(process.pid));
  } catch {
    return [];
  }
}
