/**
 * A task network's hold (nft-hold.ts) as a step of a migration: put on the source's original right before its
 * dump, carried to the copy by CRIU, and let go by whichever copy is to run (the dest's at the commit, the
 * source's at a rollback). Letting go is: the hold opened in that copy's namespace (traffic flows), its addresses
 * announced from its inner link (gratuitous ARP: the segment's bridges and neighbours learn at once where the
 * station is now), the hold's tables deleted; the dest resumes its copy right after the opening, before the
 * slow rest (nft-hold.ts says why it is slow). What failed is reported, never thrown: the caller resumes the task regardless, as the undo
 * of a --tcp-established dump does (tcp-dump-undo.ts).
 */
import { spawnSync } from 'node:child_process';
import { addNetworkHold, openNetworkHold, releaseNetworkHold } from './nft-hold.js';
import { announceAddress as announceCidr } from './address-announce.js';
import type { TaskNetwork } from './task-network.js';

/** What the hold is on; journaled with the freeze, so that a resolver (or the freeze guard) can let go too. */
export interface TaskNetworkHold {
  /** The nsfs path of the held namespace: `/proc/<root pid>/ns/net` of the original, or of the copy. */
  netns: string;
  network: TaskNetwork;
}

/** A journaled TaskNetwork (a journal is read back by a restarted agent: its fields are checked). */
export function isTaskNetwork(v: unknown): v is TaskNetwork {
  if (typeof v !== 'object' || v === null) return false;
  const n = v as Partial<TaskNetwork>;
  return typeof n.innerLink === 'string' && typeof n.mac === 'string' && Array.isArray(n.addresses) && n.addresses.every((a) => typeof a === 'string') && typeof n.outerLink === 'string' && typeof n.bridge === 'string';
}

export function isTaskNetworkHold(v: unknown): v is TaskNetworkHold {
  return typeof v === 'object' && v !== null && typeof (v as TaskNetworkHold).netns === 'string' && isTaskNetwork((v as TaskNetworkHold).network);
}

/** Announces `ip` (ADDRESS/PREFIX) from `link` in `netns`: gratuitous ARP (IPv4), unsolicited NA (IPv6). */
export type AnnounceAddress = (netns: string, link: string, ip: string, mac: string) => void | Promise<void>;

/**
 * One announcement per address: a bridged segment does not lose the frame, and the copy's own traffic teaches
 * the rest; a second (and the 100 ms between) would only hold up the dest's close and a rollback's thaw.
 */
const announceAddress: AnnounceAddress = (netns, link, ip, mac) => announceCidr(netns, link, mac, ip);

export interface HoldReleaseReport {
  /** The hold tables deleted (`inet ferry-hold`, `arp ferry-hold`). */
  released: string[];
  /** The addresses announced. */
  announced: string[];
  errors: string[];
}

/** Puts the hold on (both tables, one transaction). Throws: the dump must not start unheld. */
export function holdTaskNetwork(hold: TaskNetworkHold): void {
  addNetworkHold(hold.netns);
}

/**
 * The fast half of letting go (nft-hold.ts's openNetworkHold: well under a millisecond): traffic flows from
 * here. The error, if it failed (then the hold is still closed: finishTaskNetworkHold deletes it first).
 */
export function openTaskNetworkHold(hold: TaskNetworkHold): string | undefined {
  try {
    openNetworkHold(hold.netns);
    return undefined;
  } catch (e) {
    return `the network hold not opened in ${hold.netns}: ${String(e)}`;
  }
}

/**
 * The slow half, off the downtime where it can be: the addresses announced (one gratuitous ARP each; its packet
 * socket's close waits for an RCU grace period) and the hold's tables deleted (the same wait). After a failed
 * open the tables go first, so that traffic flows before peers are told where the station is; if they stay, no
 * announcement is sent (AF_PACKET sends bypass the hooks, so it would go out, and draw peers to a station that
 * drops their packets). Never throws.
 */
export async function finishTaskNetworkHold(hold: TaskNetworkHold, openError: string | undefined, announce: AnnounceAddress = announceAddress): Promise<HoldReleaseReport> {
  const report: HoldReleaseReport = { released: [], announced: [], errors: openError ? [openError] : [] };
  const release = (): boolean => {
    try {
      report.released = releaseNetworkHold(hold.netns);
      return true;
    } catch (e) {
      report.errors.push(`the network hold not released in ${hold.netns}: ${String(e)}`);
      return false;
    }
  };
  if (openError && !release()) return report; // still held: announcing it would draw peers into the drop
  for (const cidr of hold.network.addresses) {
    const ip = cidr.split('/')[0]!;
    try {
      await announce(hold.netns, hold.network.innerLink, ip, hold.network.mac);
      report.announced.push(ip);
    } catch (e) {
      report.errors.push(`${ip} not announced from ${hold.network.innerLink}: ${String(e)}`);
    }
  }
  if (!openError) release();
  return report;
}

/** Both halves in a row (a rollback's, a resolver's, the freeze guard's): open, announce, delete. Never throws. */
export async function releaseTaskNetworkHold(hold: TaskNetworkHold, announce: AnnounceAddress = announceAddress): Promise<HoldReleaseReport> {
  return finishTaskNetworkHold(hold, openTaskNetworkHold(hold), announce);
}

/**
 * Deletes the veth's outer end in this process's namespace (the source's after the commit, the dest's after an
 * abort): false when it is gone already (the veth dies with the namespace of its other end). `ip` is bounded.
 */
export function deleteOuterLink(name: string): boolean {
  const r = spawnSync('ip', ['link', 'del', 'dev', name], { encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) return true;
  const err = `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim();
  if (/Cannot find device|does not exist|No such device/.test(err)) return false;
  throw new Error(`ip link del ${name}: ${err || `exit ${r.status}`}`);
}
