/**
 * `ferry run --net ADDRESS/PREFIX`: the task's own network identity (shared/kernel/task-network.ts), made the
 * way CRIU can carry it and Ferry can move it (docs/task-network.md):
 *   - a network namespace of its own, made under a temporary `ip netns` name that is deleted once the task
 *     runs in it, so that only the task pins it (a name left behind would keep the namespace, its address and
 *     CRIU's lock alive after the task moved: notes/netns-tcp-lab.md, pitfall 1);
 *   - one veth: `eth0` inside (the MAC given or a random locally administered one, the address, lo up, a
 *     default route via the gateway), `fy` + 8 hex outside in this namespace, enslaved to the bridge (created
 *     if missing, and up; an operator enslaves an uplink to it) and up;
 *   - one gratuitous ARP once the task runs, so that the segment learns the address's new station at once.
 * Bad input is refused before anything is made (IPv4 only for now; the address must be free on the bridge:
 * an RFC 5227 probe nobody answers; a link of the bridge's name must be a bridge). Every step that made
 * something registers its undo first: a later failure removes all of it, in reverse.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { FerryError } from '../shared/errors/ferry-error.js';
import { injectFault } from '../shared/fault-injection.js';
import { probeArp, sendGratuitousArp } from '../shared/kernel/arp.js';
import { inSubnet, ipv4CidrProblem, isIpv4, parseIpv4Cidr } from '../shared/kernel/ipv4.js';
import { linkNameProblem } from '../shared/kernel/link-name.js';
import { macProblem, normalizeMac, randomMac } from '../shared/kernel/mac-address.js';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';
import { listIpv4Addresses, listLinks } from '../shared/kernel/rtnetlink.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';

const execFileAsync = promisify(execFile);

export const DEFAULT_TASK_BRIDGE = 'ferry0';
/** The task's end of the veth, inside its namespace. */
export const INNER_LINK = 'eth0';
/** How long the address's probe waits for an answer: a station on a LAN answers within a millisecond. */
const PROBE_MS = 300;
const IP_TIMEOUT_MS = 10_000;

export interface TaskNetOptions {
  /** ADDRESS/PREFIX (IPv4). */
  net: string;
  /** Default ferry0. */
  bridge?: string | undefined;
  /** Default: the bridge's own IPv4 address in the task's subnet, when it has one; else no default route. */
  gateway?: string | undefined;
  /** Default: a random locally administered unicast MAC. */
  mac?: string | undefined;
}

export interface CompiledTaskNetOptions {
  address: string;
  prefix: number;
  bridge: string;
  /** As given; the bridge's address is looked up by checkTaskNet when undefined. */
  gateway: string | undefined;
  mac: string;
}

const bad = (message: string, hint: string): FerryError => new FerryError('BAD_ARGUMENT', { message, hint });

/** The flags' syntax, checked without touching anything (BAD_ARGUMENT). */
export function compileTaskNetOptions(o: TaskNetOptions): CompiledTaskNetOptions {
  const cidrProblem = ipv4CidrProblem(o.net);
  if (cidrProblem) {
    const v6 = o.net.includes(':');
    throw bad(`--net ${o.net.slice(0, 64)}: ${cidrProblem}`, v6 ? 'Give an IPv4 ADDRESS/PREFIX, e.g. --net 10.0.0.5/24: a task of its own network is IPv4-only for now.' : 'Give the task\'s address as ADDRESS/PREFIX, e.g. --net 10.0.0.5/24.');
  }
  const { address, prefix } = parseIpv4Cidr(o.net);
  const bridge = o.bridge ?? DEFAULT_TASK_BRIDGE;
  const nameProblem = linkNameProblem(bridge);
  if (nameProblem) throw bad(`--bridge: ${nameProblem}`, 'Give an interface name of 1 to 15 bytes without "/", ":" or whitespace.');
  if (o.gateway !== undefined) {
    if (!isIpv4(o.gateway)) throw bad(`--gateway ${o.gateway.slice(0, 64)} is not an IPv4 address`, 'Give the gateway as an IPv4 address in the task\'s subnet.');
    if (!inSubnet({ address, prefix }, o.gateway) || o.gateway === address) throw bad(`--gateway ${o.gateway} is not another address of ${o.net}'s subnet`, 'Give a gateway in the task\'s own subnet (the bridge\'s address, or a router on the segment).');
  }
  if (o.mac !== undefined) {
    const problem = macProblem(o.mac);
    if (problem) throw bad(`--mac: ${problem}`, 'Give a unicast MAC as six hex octets, e.g. 02:00:0a:00:00:05 (the 02 marks it locally administered).');
  }
  return { address, prefix, bridge, gateway: o.gateway, mac: o.mac === undefined ? randomMac() : normalizeMac(o.mac) };
}

export interface TaskNetPlan {
  /** Whether the bridge exists (else it is created). */
  bridgeExists: boolean;
  /** The default route's gateway, if any. */
  gateway: string | undefined;
}

/** What the host says about the options: refusals (NET_BRIDGE_NOT_BRIDGE, NET_ADDRESS_TAKEN) before anything is made. */
export async function checkTaskNet(c: CompiledTaskNetOptions, signal?: AbortSignal): Promise<TaskNetPlan> {
  const links = listLinks(THIS_NETNS);
  const bridge = links.find((l) => l.name === c.bridge);
  if (bridge && bridge.kind !== 'bridge') {
    throw new FerryError('NET_BRIDGE_NOT_BRIDGE', { detail: `${c.bridge} is a ${bridge.kind || 'link of no kind (a NIC or lo)'}` });
  }
  const local = listIpv4Addresses(THIS_NETNS);
  if (local.some((a) => a.address === c.address)) throw new FerryError('NET_ADDRESS_TAKEN', { detail: `${c.address} is an address of this host` });
  if (bridge?.up) {
    const macs = await probeArp(THIS_NETNS, c.bridge, c.address, PROBE_MS, signal);
    if (macs.length > 0) throw new FerryError('NET_ADDRESS_TAKEN', { detail: `${c.address} is answered on ${c.bridge} by ${macs.join(', ')}` });
  }
  const subnet = { address: c.address, prefix: c.prefix };
  const gateway = c.gateway ?? (bridge ? local.find((a) => a.ifindex === bridge.ifindex && inSubnet(subnet, a.address))?.address : undefined);
  return { bridgeExists: bridge !== undefined, gateway };
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
  /** Removes all that was made, in reverse (the veth, the name, a bridge made here); collects every error. */
  remove(): Promise<Error[]>;
}

/** Makes the namespace, the veth and (if missing) the bridge; on a failure removes what it made and throws. */
export async function makeTaskNet(c: CompiledTaskNetOptions, plan: TaskNetPlan): Promise<MadeTaskNet> {
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
  try {
    if (!plan.bridgeExists) {
      await ip(['link', 'add', c.bridge, 'type', 'bridge']);
      undo.push(() => ip(['link', 'del', c.bridge]));
      await ip(['link', 'set', c.bridge, 'up']);
    }
    await ip(['netns', 'add', name]);
    undo.push(async () => {
      if (named) await ip(['netns', 'del', name]);
    });
    await ip(['link', 'add', outer, 'type', 'veth', 'peer', 'name', INNER_LINK, 'netns', name]);
    // Deleting the outer end deletes the pair; once the task is gone with its namespace, so is the pair.
    const outerExists = (): boolean => listLinks(THIS_NETNS).some((l) => l.name === outer);
    undo.push(async () => {
      // A task killed just before may be taking its namespace, and the pair, down meanwhile.
      if (outerExists()) await ip(['link', 'del', outer]).catch((e: unknown) => (outerExists() ? Promise.reject(e as Error) : undefined));
    });
    await ip(['-n', name, 'link', 'set', INNER_LINK, 'address', c.mac]);
    await ip(['-n', name, 'addr', 'add', `${c.address}/${c.prefix}`, 'dev', INNER_LINK]);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    await ip(['-n', name, 'link', 'set', INNER_LINK, 'up']);
    if (plan.gateway !== undefined) await ip(['-n', name, 'route', 'add', 'default', 'via', plan.gateway, 'dev', INNER_LINK]);
    await ip(['link', 'set', outer, 'master', c.bridge, 'up']);
    injectFault('run.net-made');
  } catch (e) {
    const errors = await remove();
    if (e instanceof FerryError) e.rollbackErrors.push(...errors);
    throw e;
  }
  return {
    netns: `/run/netns/${name}`,
    network: { innerLink: INNER_LINK, mac: c.mac, addresses: [`${c.address}/${c.prefix}`], outerLink: outer, bridge: c.bridge },
    release: async () => {
      await ip(['netns', 'del', name]);
      named = false;
    },
    remove,
  };
}

/** The one announcement of the task's address when it starts, from inside its namespace. */
export async function announceTaskNet(pid: number, c: CompiledTaskNetOptions): Promise<void> {
  await sendGratuitousArp(`/proc/${pid}/ns/net`, INNER_LINK, c.address, c.mac, 1);
}
