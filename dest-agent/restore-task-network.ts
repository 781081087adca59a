/**
 * The task network a Restore asks for (proto TaskNetwork), checked before the session moves (request-bounds.ts's
 * checkTaskNetwork, as Negotiate's; and names criu's `veth[..]:..@..` can carry), and made into what criu
 * restore is told here: the bridge (this agent's, else the source's name) must exist here and be a bridge.
 * The veth's outer end keeps the source's name when that is free here, else gets `fy` + 8 hex of the
 * migration id (unique per migration, at most 15 bytes), so that an abort can find and delete it.
 */
import { createHash } from 'node:crypto';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { Phase } from '../shared/phases.js';
import type { TaskNetworkMessage } from '../shared/transport/messages.js';
import { checkTaskNetwork } from './request-bounds.js';
import { listLinks, type Link } from '../shared/kernel/rtnetlink.js';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';

/** Stricter than the kernel's names: criu splits `veth[INNER]:OUTER@BRIDGE` on '[', ']', ':' and '@'. */
const CRIU_SAFE = /^[A-Za-z0-9_.-]+$/;

/** checkTaskNetwork (request-bounds.ts), and names criu can be told; the fields as a TaskNetwork. */
function checkedTaskNetwork(field: string, n: TaskNetworkMessage, phase: Phase): TaskNetwork {
  checkTaskNetwork(field, n, phase);
  for (const [name, value] of Object.entries({ inner_link: n.innerLink, outer_link: n.outerLink, bridge: n.bridge })) {
    if (!CRIU_SAFE.test(value)) throw new FerryError('REQUEST_INVALID', { side: 'dest', phase, detail: `${field}.${name} holds a character criu cannot be given (only A-Z a-z 0-9 _ . -)` });
  }
  return { innerLink: n.innerLink, mac: n.mac, addresses: [...n.addresses], outerLink: n.outerLink, bridge: n.bridge };
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
  const n = checkedTaskNetwork('task_network', asked, 'restore');
  const here = bridge ?? n.bridge;
  const links = hereLinks();
  const br = links.find((l) => l.name === here);
  if (br?.kind !== 'bridge') {
    throw new FerryError('TASK_BRIDGE_MISSING_ON_DEST', { side: 'dest', phase: 'restore', detail: `${here} ${br ? 'is not a bridge' : 'does not exist'} on the dest` });
  }
  return { ...n, outerLink: destOuterLink(n.outerLink, migrationId, (name) => links.some((l) => l.name === name)), bridge: here };
}
