/**
 * `ferry run --net ADDRESS/PREFIX` (repeatable: IPv4 and IPv6): the task's own network identity
 * (shared/kernel/task-network.ts), made the way CRIU can carry it and Ferry can move it (docs/task-network.md):
 *   - a network namespace of its own, made under a temporary `ip netns` name that is deleted once the task
 *     runs in it, so that only the task pins it (a name left behind would keep the namespace, its address and
 *     CRIU's lock alive after the task moved: notes/netns-tcp-lab.md, pitfall 1);
 *   - one veth: `eth0` inside (the MAC given or a random locally administered one, the addresses (IPv6 ones
 *     without DAD), lo up, a default route per family via its gateway), `fy` + 8 hex outside in this namespace,
 *     enslaved to the bridge (created if missing, and up; an operator enslaves an uplink to it) and up;
 *   - one announcement per address once the task runs (gratuitous ARP, unsolicited NA), so that the segment
 *     learns the address's new station at once.
 * Bad input is refused before anything is made (each address must be free on the bridge: an ARP or DAD probe
 * nobody answers; a link of the bridge's name must be a bridge). Every step that made something registers its
 * undo first: a later failure removes all of it, in reverse.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { FerryError } from '../shared/errors/ferry-error.js';
import { injectFault } from '../shared/fault-injection.js';
import { announceAddress, probeAddress } from '../shared/kernel/address-announce.js';
import { formatCidr, ipCidrProblem, parseIpCidr, type IpCidr } from '../shared/kernel/ip-cidr.js';
import { inSubnet, isIpv4 } from '../shared/kernel/ipv4.js';
import { inSubnet6, ipv6Bytes, isIpv6, isLinkLocal6, normalizeIpv6 } from '../shared/kernel/ipv6.js';
import { criuLinkNameProblem } from '../shared/kernel/link-name.js';
import { macProblem, normalizeMac, randomMac } from '../shared/kernel/mac-address.js';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';
import { listIpv4Addresses, listIpv6Addresses, listLinks } from '../shared/kernel/rtnetlink.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';

const execFileAsync = promisify(execFile);

export const DEFAULT_TASK_BRIDGE = 'ferry0';
/** The task's end of the veth, inside its namespace. */
export const INNER_LINK = 'eth0';
/** How long the address's probe waits for an answer: a station on a LAN answers within a millisecond. */
const PROBE_MS = 300;
const IP_TIMEOUT_MS = 10_000;

/** How many addresses `--net` may give a task (its Negotiate bound is MAX_TASK_ADDRESSES). */
export const MAX_RUN_ADDRESSES = 8;

export interface TaskNetOptions {
  /** ADDRESS/PREFIX, IPv4 or IPv6, one per `--net` (at most MAX_RUN_ADDRESSES). */
  net: string | readonly string[];
  /** Default ferry0. */
  bridge?: string | undefined;
  /** IPv4. Default: the bridge's own IPv4 address in a task's IPv4 subnet, when it has one; else no default route. */
  gateway?: string | undefined;
  /** IPv6. Default: the bridge's own global IPv6 address in a task's IPv6 prefix, when it has one; else no default route. */
  gateway6?: string | undefined;
  /** Default: a random locally administered unicast MAC. */
  mac?: string | undefined;
}

export interface CompiledTaskNetOptions {
  /** Normalized (IPv6 in RFC 5952 text), no address twice. */
  addresses: IpCidr[];
  bridge: string;
  /** As given; the bridge's addresses are looked up by checkTaskNet when undefined. */
  gateway: string | undefined;
  gateway6: string | undefined;
  mac: string;
}

const bad = (message: string, hint: string): FerryError => new FerryError('BAD_ARGUMENT', { message, hint });

const CIDR_HINT = "Give the task's address as ADDRESS/PREFIX, IPv4 or IPv6, e.g. --net 10.0.0.5/24 --net fd00::5/64 (one --net per address).";

/** The flags' syntax, checked without touching anything (BAD_ARGUMENT). */
export function compileTaskNetOptions(o: TaskNetOptions): CompiledTaskNetOptions {
  const nets = typeof o.net === 'string' ? [o.net] : o.net;
  if (nets.length === 0) throw bad('--net needs ADDRESS/PREFIX', CIDR_HINT);
  if (nets.length > MAX_RUN_ADDRESSES) throw bad(`--net given ${nets.length} times; a task has at most ${MAX_RUN_ADDRESSES} addresses`, 'Give at most 8 --net.');
  const addresses = nets.map((net) => {
    const problem = ipCidrProblem(net);
    if (problem) throw bad(`--net ${net.slice(0, 64)}: ${problem}`, CIDR_HINT);
    return parseIpCidr(net);
  });
  const twice = addresses.find((a, i) => addresses.findIndex((b) => b.address === a.address) !== i);
  if (twice) throw bad(`--net gives ${twice.address} twice`, 'Give each address once.');
  const bridge = o.bridge ?? DEFAULT_TASK_BRIDGE;
  const nameProblem = criuLinkNameProblem(bridge);
  if (nameProblem) throw bad(`--bridge: ${nameProblem}`, 'Give an interface name of 1 to 15 bytes of A-Z a-z 0-9 _ . - (criu cannot be given others).');
  const v4 = addresses.filter((a) => a.family === 4);
  const v6 = addresses.filter((a) => a.family === 6);
  if (o.gateway !== undefined) {
    if (!isIpv4(o.gateway)) throw bad(`--gateway ${o.gateway.slice(0, 64)} is not an IPv4 address`, "Give the gateway as an IPv4 address in the task's subnet (--gateway6 for IPv6).");
    if (!v4.some((a) => inSubnet(a, o.gateway!) && a.address !== o.gateway)) {
      throw bad(`--gateway ${o.gateway} is not another address of a task's IPv4 subnet`, "Give a gateway in the task's own subnet (the bridge's address, or a router on the segment).");
    }
  }
  let gateway6: string | undefined;
  if (o.gateway6 !== undefined) {
    if (!isIpv6(o.gateway6)) throw bad(`--gateway6 ${o.gateway6.slice(0, 64)} is not an IPv6 address`, "Give the gateway as an IPv6 address in the task's prefix, or a router's link-local fe80:: address.");
    gateway6 = normalizeIpv6(o.gateway6);
    // A router is as often named by its link-local address (what its advertisements come from) as by a global one.
    const onLink = isLinkLocal6(ipv6Bytes(gateway6)) || v6.some((a) => inSubnet6(a, gateway6!) && a.address !== gateway6);
    if (v6.length === 0 || !onLink) {
      throw bad(`--gateway6 ${gateway6} is not a link-local address nor another address of a task's IPv6 prefix`, "Give an IPv6 --net, and a gateway6 in its prefix or a router's fe80:: address.");
    }
  }
  if (o.mac !== undefined) {
    const problem = macProblem(o.mac);
    if (problem) throw bad(`--mac: ${problem}`, 'Give a unicast MAC as six hex octets, e.g. 02:00:0a:00:00:05 (the 02 marks it locally administered).');
  }
  return { addresses, bridge, gateway: o.gateway, gateway6, mac: o.mac === undefined ? randomMac() : normalizeMac(o.mac) };
}

export interface TaskNetPlan {
  /** Whether the bridge exists (else it is created). */
  bridgeExists: boolean;
  /** The default route's gateway, if any. */
  gateway: string | undefined;
  /** The default IPv6 route's gateway, if any. */
  gateway6: string | undefined;
}

/** What the host says about the options: refusals (NET_BRIDGE_NOT_BRIDGE, NET_ADDRESS_TAKEN) before anything is made. */
export async function checkTaskNet(c: CompiledTaskNetOptions, signal?: AbortSignal): Promise<TaskNetPlan> {
  const links = listLinks(THIS_NETNS);
  const bridge = links.find((l) => l.name === c.bridge);
  if (bridge && bridge.kind !== 'bridge') {
    throw new FerryError('NET_BRIDGE_NOT_BRIDGE', { detail: `${c.bridge} is a ${bridge.kind || 'link of no kind (a NIC or lo)'}` });
  }
  const local4 = listIpv4Addresses(THIS_NETNS);
  const local6 = listIpv6Addresses(THIS_NETNS);
  for (const a of c.addresses) {
    if ([...local4, ...local6].some((l) => l.address === a.address)) throw new FerryError('NET_ADDRESS_TAKEN', { detail: `${a.address} is an address of this host` });
  }
  if (bridge?.up) {
    const probes = c.addresses.map(async (a) => ({ a, macs: await probeAddress(THIS_NETNS, c.bridge, a.address, PROBE_MS, signal) }));
    const taken = (await Promise.all(probes)).find((p) => p.macs.length > 0);
    if (taken) throw new FerryError('NET_ADDRESS_TAKEN', { detail: `${taken.a.address} is answered on ${c.bridge} by ${taken.macs.join(', ')}` });
  }
  const own = (local: { ifindex: number; address: string }[], inIt: (address: string) => boolean): string | undefined =>
    bridge ? local.find((l) => l.ifindex === bridge.ifindex && inIt(l.address))?.address : undefined;
  const v4 = c.addresses.filter((a) => a.family === 4);
  const v6 = c.addresses.filter((a) => a.family === 6);
  return {
    bridgeExists: bridge !== undefined,
    gateway: c.gateway ?? own(local4, (x) => v4.some((a) => inSubnet(a, x))),
    gateway6: c.gateway6 ?? own(local6, (x) => v6.some((a) => inSubnet6(a, x))),
  };
}

async function ip(args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args, { timeout: IP_TIMEOUT_MS });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim() ?? '';
    throw new FerryError('NET_SETUP_FAILED', { detail: `ip ${args.join(' ')}: ${stderr || (err as Error).message}`, cause: err });
  }
}

/** The network made for a task: enter it with `nsenter --net=netns` until release(), which drops the name. */
export interface MadeTaskNet {
  /** /run/netns/NAME of the temporary name. */
  netns: string;
  network: TaskNetwork;
  /** Deletes the temporary name: from here the task alone holds the namespace. The undo stays for remove(). */
  release(): Promise<void>;
  /** Removes all that was made, in reverse (the veth, the name, a bridge made here if it has no ports); collects every error. */
  remove(): Promise<Error[]>;
}

/**
 * Deletes the bridge `name` made by this run, unless it has ports: a run started meanwhile may have put its veth
 * on it (both found it missing; the first made it). Returns whether it was deleted.
 */
export async function removeBridgeIfUnused(name: string): Promise<boolean> {
  const links = listLinks(THIS_NETNS);
  const bridge = links.find((l) => l.name === name && l.kind === 'bridge');
  if (!bridge || links.some((l) => l.master === bridge.ifindex)) return false;
  await ip(['link', 'del', name]);
  return true;
}

/**
 * Makes the namespace, the veth and (if missing) the bridge; on a failure, or `signal` aborted between two steps
 * (ferry run's SIGINT/SIGTERM), removes what it made and throws. A step under way is let finish (bounded by
 * IP_TIMEOUT_MS): killed midway, what it made might have no undo yet.
 */
export async function makeTaskNet(c: CompiledTaskNetOptions, plan: TaskNetPlan, signal?: AbortSignal): Promise<MadeTaskNet> {
  const id = randomBytes(4).toString('hex');
  const name = `ferry-run-${id}`;
  const outer = `fy${id}`;
  const undo: (() => Promise<void>)[] = [];
  let named = true;
  const remove = async (): Promise<Error[]> => {
    const errors: Error[] = [];
    for (const step of undo.splice(0).reverse()) await step().catch((e: unknown) => errors.push(e as Error));
    return errors;
  };
  // A making step; the undos run plain `ip` (after an abort too).
  const makeStep = (args: string[]): Promise<void> => {
    signal?.throwIfAborted();
    return ip(args);
  };
  try {
    if (!plan.bridgeExists) {
      await makeStep(['link', 'add', c.bridge, 'type', 'bridge']);
      undo.push(async () => void (await removeBridgeIfUnused(c.bridge)));
      await makeStep(['link', 'set', c.bridge, 'up']);
    }
    await makeStep(['netns', 'add', name]);
    undo.push(async () => {
      if (named) await ip(['netns', 'del', name]);
    });
    await makeStep(['link', 'add', outer, 'type', 'veth', 'peer', 'name', INNER_LINK, 'netns', name]);
    // Deleting the outer end deletes the pair; once the task is gone with its namespace, so is the pair.
    const outerExists = (): boolean => listLinks(THIS_NETNS).some((l) => l.name === outer);
    undo.push(async () => {
      // A task killed just before may be taking its namespace, and the pair, down meanwhile.
      if (outerExists()) await ip(['link', 'del', outer]).catch((e: unknown) => (outerExists() ? Promise.reject(e as Error) : undefined));
    });
    await makeStep(['-n', name, 'link', 'set', INNER_LINK, 'address', c.mac]);
    for (const a of c.addresses) {
      // No DAD for an IPv6 address: checkTaskNet probed the segment already, and a tentative address could
      // not be used (nor answer) for its second or so.
      await makeStep(['-n', name, 'addr', 'add', formatCidr(a), 'dev', INNER_LINK, ...(a.family === 6 ? ['nodad'] : [])]);
    }
    await makeStep(['-n', name, 'link', 'set', 'lo', 'up']);
    await makeStep(['-n', name, 'link', 'set', INNER_LINK, 'up']);
    if (plan.gateway !== undefined) await makeStep(['-n', name, 'route', 'add', 'default', 'via', plan.gateway, 'dev', INNER_LINK]);
    if (plan.gateway6 !== undefined) await makeStep(['-n', name, '-6', 'route', 'add', 'default', 'via', plan.gateway6, 'dev', INNER_LINK]);
    await makeStep(['link', 'set', outer, 'master', c.bridge, 'up']);
    injectFault('run.net-made');
    signal?.throwIfAborted();
  } catch (e) {
    const errors = await remove();
    if (e instanceof FerryError) e.rollbackErrors.push(...errors);
    throw e;
  }
  return {
    netns: `/run/netns/${name}`,
    network: { innerLink: INNER_LINK, mac: c.mac, addresses: c.addresses.map(formatCidr), outerLink: outer, bridge: c.bridge },
    release: async () => {
      await ip(['netns', 'del', name]);
      named = false;
    },
    remove,
  };
}

/** The one announcement of each of the task's addresses when it starts, from inside its namespace. */
export async function announceTaskNet(pid: number, c: CompiledTaskNetOptions): Promise<void> {
  for (const a of c.addresses) await announceAddress(`/proc/${pid}/ns/net`, INNER_LINK, c.mac, a.address);
}
