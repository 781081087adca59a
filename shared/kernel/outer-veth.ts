/**
 * The outer end of a task's veth in this agent's namespace, deleted after a commit only while it is still the
 * link the freeze journaled: the same name and ifindex. Its name alone is no proof: once the original's namespace
 * took the pair along, a later `ferry run --net` or a copy restored here may carry the same name. (The kernel
 * hands out ifindexes cyclically, so a name bound again within the microseconds between the look and the
 * delete, to the same ifindex, is what is left.)
 */
import { listLinks, type Link } from './rtnetlink.js';
import { THIS_NETNS } from './netns-socket.js';
import { deleteOuterLink } from './task-network-hold.js';

/** deleted; gone (with its namespace, usually); another link now has the name; unknown (no ifindex journaled). */
export type OuterLinkDeletion = 'deleted' | 'gone' | 'another link' | 'unknown';

/** Deletes `name` in this agent's namespace only when its ifindex is `ifindex`; throws when `ip link del` fails. */
export function deleteJournaledOuterLink(name: string, ifindex: number | undefined, links: () => Link[] = () => listLinks(THIS_NETNS), del: (name: string) => boolean = deleteOuterLink): OuterLinkDeletion {
  const found = links().find((l) => l.name === name);
  if (!found) return 'gone';
  if (ifindex === undefined) return 'unknown';
  if (found.ifindex !== ifindex) return 'another link';
  return del(name) ? 'deleted' : 'gone';
}
