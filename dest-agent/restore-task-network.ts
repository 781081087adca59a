/**
 * The task network a Restore asks for (proto TaskNetwork), checked before the session moves, and made into
 * what criu restore is told here: every name a Linux interface name, the MAC a unicast one, at most
 * MAX_TASK_ADDRESSES IPv4 CIDRs; the bridge (this agent's, else the source's name) must exist here and be a
 * bridge. The veth's outer end keeps the source's name when that is free here, else gets `fy` + 8 hex of the
 * migration id (unique per migration, at most 15 bytes), so that an abort can find and delete it.
 */
import { createHash } from 'node:crypto';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { Phase } from '../shared/phases.js';
import type { TaskNetworkMessage } from '../shared/transport/messages.js';
import { checkListLength } from './request-bounds.js';
import { MAX_TASK_ADDRESSES } from '../shared/kernel/read-task-network.js';
import { listLinks, type Link } from '../shared/kernel/rtnetlink.js';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';
import { linkNameProblem } from '../shared/kernel/link-name.js';
import { macProblem, normalizeMac } from '../shared/kernel/mac-address.js';
import { ipv4CidrProblem } from '../shared/kernel/ipv4.js';

/** Stricter than the kernel's names: criu splits `veth[INNER]:OUTER@BRIDGE` on '[', ']', ':' and '@'. */
const CRIU_SAFE = /^[A-Za-z0-9_.-]+$/;

const invalid = (phase: Phase, detail: string): FerryError => new FerryError('REQUEST_INVALID', { side: 'dest', phase, detail });

// The value is never echoed: only which field is wrong (a peer's 5,000 characters must not travel back).
function checkLinkName(field: string, name: string, phase: Phase): void {
  if (linkNameProblem(name) !== undefined || !CRIU_SAFE.test(name)) throw invalid(phase, `${field} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`);
}

/** Every field bounded and well-formed (REQUEST_INVALID naming the field otherwise); the fields as a TaskNetwork. */
export function checkTaskNetwork(field: string, n: TaskNetworkMessage, phase: Phase): TaskNetwork {
  checkLinkName(`${field}.inner_link`, n.innerLink, phase);
  checkLinkName(`${field}.outer_link`, n.outerLink, phase);
  checkLinkName(`${field}.bridge`, n.bridge, phase);
  if (macProblem(n.mac) !== undefined) throw invalid(phase, `${field}.mac is not a unicast MAC aa:bb:cc:dd:ee:ff`);
  const mac = normalizeMac(n.mac);
  const addresses = n.addresses ?? [];
  checkListLength(`${field}.addresses`, addresses.length, MAX_TASK_ADDRESSES, phase);
  if (addresses.length === 0) throw invalid(phase, `${field}.addresses is empty`);
  for (const [i, a] of addresses.entries()) if (ipv4CidrProblem(a) !== undefined) throw invalid(phase, `${field}.addresses[${i}] is not an IPv4 host ADDRESS/PREFIX`);
  return { innerLink: n.innerLink, mac, addresses: [...addresses], outerLink: n.outerLink, bridge: n.bridge };
}

/** The links of this agent's network namespace (rtnetlink: /sys shows the namespace that mounted it, not ours). */
const hereLinks = (): Link[] => listLinks(THIS_NETNS);

/** The outer end's name here: the source's when free, else `fy` + 8 hex of the migration id. */
export function destOuterLink(sourceName: string, migrationId: string, exists: (name: string) => boolean): string {
  if (!exists(sourceName)) return sourceName;
  return `fy${createHash('sha256').update(migrationId).digest('hex').slice(0, 8)}`;
}

/**
 * The task network as this dest restores it: `bridge` this agent's (`dest-agent --bridge`), else the source's
 * name. Undefined when the task shares the source host's namespace. TASK_BRIDGE_MISSING_ON_DEST when the bridge
 * is not here or not a bridge.
 */
export function restoreTaskNetwork(asked: TaskNetworkMessage | null | undefined, migrationId: string, bridge: string | undefined): TaskNetwork | undefined {
  if (!asked) return undefined;
  const n = checkTaskNetwork('task_network', asked, 'restore');
  const here = bridge ?? n.bridge;
  const links = hereLinks();
  const br = links.find((l) => l.name === here);
  if (br?.kind !== 'bridge') {
    throw new FerryError('TASK_BRIDGE_MISSING_ON_DEST', { side: 'dest', phase: 'restore', detail: `${here} ${br ? 'is not a bridge' : 'does not exist'} on the dest` });
  }
  return { ...n, outerLink: destOuterLink(n.outerLink, migrationId, (name) => links.some((l) => l.name === name)), bridge: here };
}
