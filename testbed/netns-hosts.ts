/**
 * Two "hosts" on one machine: two network namespaces joined by a veth pair, with addresses of our own, each
 * with its own certificate; the link between them can be shaped, cut and healed.
 *
 * Namespaces are entered with `nsenter --net=/run/netns/NAME`, never `ip netns exec`: the latter also makes a
 * private mount namespace, and CRIU then refuses to dump (notes/criu-lab.md §5).
 *
 * Isolation: the veth is created with both ends inside our namespaces (it never exists in the host's network
 * namespace), nothing is routed beyond them, so no test traffic can leave them.
 *
 * Mutual TLS, as in production: each pair of hosts gets its own CA (test-pki.ts) and a certificate per host
 * (spiffe://e2e.ferry.test/ferry/src|dst, with the host's address as IP SAN, good for TLS servers and clients),
 * in the test run's state dir; a ferry started in a host finds its files through FERRY_TLS_DIR.
 *
 * A cut loses packets as a real network does: silently, both ways, with established connections left open to
 * retransmit. Each host gets a permanent neighbour entry that points the peer's address at a MAC no interface
 * has: its frames still leave, and the peer's veth, seeing another station's MAC, drops them before IP looks
 * at them. This kernel has neither nft nor iptables nor tc classifiers; this needs only `ip`. Healing deletes
 * the entries and ARP finds the peer again.
 *
 * A link down (downLink, issue 12's "`ip link set down` on the veth") is the other cut: the src's end of the
 * veth set down, as an operator or a failing NIC does. What it does on this kernel (6.18, measured with a TCP
 * connection across a veth whose one end was set down for 5 s and for 60 s):
 *   - the downed end loses its connected route (the kernel puts it back at `up`) and its neighbour entries; the
 *     other end shows NO-CARRIER and keeps its route (flagged linkdown); a tbf qdisc on the downed end stays;
 *   - a new connect() from the downed side fails at once with ENETUNREACH; one from the other side hangs (its
 *     SYNs are dropped), so a gRPC client on the src side fails fast and backs off, one on the dst side waits;
 *   - an established connection survives both 5 s and 60 s: neither side sees an error or an RST, and what was
 *     written meanwhile, both ways, arrives within ~0.6 s of the `up` (no wait for a backed-off retransmission
 *     timer was seen, after 60 s either).
 * upLink sets it up again and waits, bounded, until each host reaches the other (a TCP connect answered).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { addNetns, deleteNetns, ip, NETNS_DIR, sweepStaleNetns, tcpAnswers } from './netns-names.js';
import { testStateDir } from './temp-dirs.js';
import { createTestPki } from './test-pki.js';

const execFileAsync = promisify(execFile);

const NAME_PATTERN = /^ferry-t(\d+)-\d+-(src|dst)$/;
/** Unicast, locally administered, and on no interface: frames sent to it are dropped by the receiving veth. */
const NOWHERE_MAC = '02:00:00:00:00:01';

export interface Host {
  readonly role: 'src' | 'dst';
  /** Namespace name, as `ip netns list` shows it. */
  readonly name: string;
  /** /run/netns/NAME: what nsenter --net and startMemtest({ netns }) take. */
  readonly netns: string;
  /** This host's end of the veth. */
  readonly link: string;
  /** Its IPv4 address, without the prefix length. */
  readonly address: string;
  /** cert.pem, key.pem and ca.pem of this host: FERRY_TLS_DIR of every ferry started in it. */
  readonly tlsDir: string;
  /** Its certificate's identity, spiffe://e2e.ferry.test/ferry/src|dst (what --allow-peer names). */
  readonly identity: string;
}

/** What the agents' launchers need of a harness: the two agent hosts (a segment of three has them too). */
export interface HostPair {
  readonly src: Host;
  readonly dst: Host;
  /** The command prefix that runs a program inside `host`'s network namespace. */
  enter(host: Host): string[];
  /** The other host of the pair. */
  peerOf(host: Host): Host;
}

export interface TwoHosts extends HostPair {
  /** The n of 10.77.n.0/24. */
  readonly subnet: number;
  /** Shapes the src's egress (the page stream's direction) with tbf, e.g. shape('1gbit'). */
  shape(rate: string): Promise<void>;
  /** Drops every packet between the hosts, both ways, until healLink(); connections stay open. Idempotent. */
  cutLink(): Promise<void>;
  /** Lets packets through again; retransmissions of open connections get through. Idempotent. */
  healLink(): Promise<void>;
  /** Whether either host still holds a cut's neighbour entry (read from the kernel, not remembered). */
  linkIsCut(): Promise<boolean>;
  /** `ip link set down` on the src's end of the veth (the header says what that does). Idempotent. */
  downLink(): Promise<void>;
  /** `ip link set up` on both ends, then waits until each host reaches the other again (default bound 10 s;
   * throws when they do not). Idempotent. */
  upLink(timeoutMs?: number): Promise<void>;
  /** Whether either end of the veth is administratively down (read from the kernel). */
  linkIsDown(): Promise<boolean>;
  /** Deletes both namespaces (the veth and any cut go with them). Idempotent. */
  destroy(): Promise<void>;
}

let created = 0;

/**
 * Creates the two hosts: ferry-t<pid>-<k>-src (10.77.n.1/24) and ferry-t<pid>-<k>-dst (10.77.n.2/24), lo up in
 * both. n comes from the pid, so that concurrent runs differ even in what they print (the namespaces are
 * separate anyway: the same address in two namespaces never clashes).
 */
export async function createTwoHosts(): Promise<TwoHosts> {
  sweepStaleNetns(NAME_PATTERN);
  const k = created++;
  const subnet = ((process.pid * 7 + k) % 250) + 1;
  const address = (role: 'src' | 'dst'): string => `10.77.${subnet}.${role === 'src' ? 1 : 2}`;
  const pki = await createTestPki(testStateDir(), 'e2e.ferry.test');
  const host = async (role: 'src' | 'dst'): Promise<Host> => {
    const name = `ferry-t${process.pid}-${k}-${role}`;
    const cert = await pki.issue(role, { ipAddresses: [address(role)] });
    return {
      role,
      name,
      netns: join(NETNS_DIR, name),
      link: `fy${process.pid}x${k}${role[0]}`,
      address: address(role),
      tlsDir: join(cert.certFile, '..'),
      identity: cert.identity!,
    };
  };
  let src: Host, dst: Host;
  try {
    [src, dst] = [await host('src'), await host('dst')];
    for (const h of [src, dst]) {
      if (h.link.length > 15) throw new Error(`link name ${h.link} is longer than 15 characters`);
    }
  } catch (err) {
    pki.remove();
    throw err;
  }

  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      const errors: unknown[] = [];
      for (const h of [src, dst]) await deleteNetns(h.name).catch((e: unknown) => errors.push(e));
      pki.remove();
      if (errors.length > 0) throw errors[0];
    })();
    return destroyed;
  };

  try {
    for (const h of [src, dst]) await addNetns(h.name);
    // Both ends are born inside their namespaces: the pair never appears in the host's network namespace.
    await ip(['link', 'add', src.link, 'netns', src.name, 'type', 'veth', 'peer', 'name', dst.link, 'netns', dst.name]);
    for (const h of [src, dst]) {
      await ip(['-n', h.name, 'addr', 'add', `${h.address}/24`, 'dev', h.link]);
      await ip(['-n', h.name, 'link', 'set', 'lo', 'up']);
      await ip(['-n', h.name, 'link', 'set', h.link, 'up']);
    }
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }

  const enter = (h: Host): string[] => ['nsenter', `--net=${h.netns}`];
  const peerOf = (h: Host): Host => (h.role === 'src' ? dst : src);
  const ends = (): [Host, Host][] => [
    [src, dst],
    [dst, src],
  ];
  return {
    src,
    dst,
    subnet,
    enter,
    peerOf,
    shape: async (rate) => {
      await execFileAsync(
        enter(src)[0]!,
        [...enter(src).slice(1), 'tc', 'qdisc', 'replace', 'dev', src.link, 'root', 'tbf', 'rate', rate, 'burst', '1mb', 'latency', '50ms'],
        { timeout: 10_000 },
      );
    },
    cutLink: async () => {
      for (const [h, peer] of ends()) {
        await ip(['-n', h.name, 'neigh', 'replace', peer.address, 'lladdr', NOWHERE_MAC, 'nud', 'permanent', 'dev', h.link]);
      }
    },
    healLink: async () => {
      for (const [h, peer] of ends()) {
        // Only a cut's entry: an entry ARP learned is left alone (healing an intact link changes nothing).
        if (!(await holdsCutEntry(h, peer))) continue;
        await ip(['-n', h.name, 'neigh', 'del', peer.address, 'dev', h.link]);
      }
    },
    linkIsCut: async () => {
      for (const [h, peer] of ends()) if (await holdsCutEntry(h, peer)) return true;
      return false;
    },
    downLink: async () => {
      await ip(['-n', src.name, 'link', 'set', src.link, 'down']);
    },
    upLink: async (timeoutMs = UP_TIMEOUT_MS) => {
      for (const h of [src, dst]) await ip(['-n', h.name, 'link', 'set', h.link, 'up']);
      const deadline = Date.now() + timeoutMs;
      for (const [h, peer] of ends()) {
        while (!(await reaches(h, peer))) {
          if (Date.now() >= deadline) throw new Error(`${h.name} does not reach ${peer.address} ${timeoutMs} ms after ip link set up`);
          await sleep(REACH_RETRY_MS);
        }
      }
    },
    linkIsDown: async () => {
      for (const h of [src, dst]) if (!(await isAdminUp(h))) return true;
      return false;
    },
    destroy,
  };
}

/** `ip link set up` to both hosts reaching each other: carrier, the route back, ARP; ~0.1 s here. */
const UP_TIMEOUT_MS = 10_000;
const REACH_RETRY_MS = 100;
/** A probe's connect is answered (refused or accepted) within a millisecond on a live veth. */
const REACH_PROBE_MS = 1_000;
/**
 * Whether `h` reaches `peer`: a TCP connect from h's namespace to a closed port of the peer's address gets an
 * answer (netns-names.ts).
 */
const reaches = (h: Host, peer: Host): Promise<boolean> => tcpAnswers(h.netns, peer.address, undefined, REACH_PROBE_MS);

async function isAdminUp(h: Host): Promise<boolean> {
  const [shown] = JSON.parse(await ip(['-n', h.name, '-j', 'link', 'show', 'dev', h.link])) as { flags?: string[] }[];
  return shown?.flags?.includes('UP') ?? false;
}

async function holdsCutEntry(h: Host, peer: Host): Promise<boolean> {
  const shown = await ip(['-n', h.name, 'neigh', 'show', peer.address, 'dev', h.link]);
  return shown.toLowerCase().includes(`lladdr ${NOWHERE_MAC}`);
}
