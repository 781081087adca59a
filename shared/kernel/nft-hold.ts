/**
 * The hold of a task's own network namespace: `table inet ferry-hold` and `table arp ferry-hold`, each with an
 * input and an output chain of policy drop, so that nothing of the namespace reaches the wire nor is reached
 * from it. The source adds it right before `criu dump`: the stopped original is then off the segment (it no
 * longer answers ARP, which the inet lock of CRIU does not stop: netns-tcp-lab, pitfall 3), and CRIU dumps
 * the tables with the namespace's ruleset, so that the copy on the dest comes back held too (CRIU deletes only
 * its own CRIU-* lock when it unlocks). Whichever copy is to run has the hold released: the dest's at the
 * commit, the source's at a rollback; then it announces its addresses (arp.ts).
 *
 * Chosen over setting the veth down (netns-tcp-lab: a link down costs about 1.1 s, through a failed ARP of
 * the restored socket): the links stay up, only the packets wait for the peer's next retransmission.
 */
import { deleteNftTable, listNftBaseChains, newTableWithChains, nftBatch, type NftTable } from './nft-tables.js';
import { SystemCallError } from '../errors/ferry-error.js';
import { errnoName } from '../native/libc.js';

export const HOLD_TABLE_NAME = 'ferry-hold';
export const HOLD_TABLES: readonly NftTable[] = [
  { family: 'inet', name: HOLD_TABLE_NAME },
  { family: 'arp', name: HOLD_TABLE_NAME },
];
const HOLD_CHAINS = [
  { name: 'input', hook: 'input', priority: 0, policy: 'drop' },
  { name: 'output', hook: 'output', priority: 0, policy: 'drop' },
] as const;

/** Adds both hold tables in one transaction (all or nothing); adding it again changes nothing. */
export function addNetworkHold(netns: string): void {
  const errno = nftBatch(netns, HOLD_TABLES.flatMap((t) => newTableWithChains(t, HOLD_CHAINS)));
  if (errno !== 0) throw new SystemCallError('netlink NEWTABLE/NEWCHAIN', errno, errnoName(errno), `the network hold in ${netns}`);
}

/** Deletes both hold tables; the ones that were there, as `family name` (none: there was no hold). */
export function releaseNetworkHold(netns: string): string[] {
  return HOLD_TABLES.filter((t) => deleteNftTable(netns, t)).map((t) => `${t.family} ${t.name}`);
}

/** Whether the namespace is held whole: both tables, each with a dropping input and output chain. */
export function isNetworkHeld(netns: string): boolean {
  const chains = listNftBaseChains(netns).filter((c) => c.table.name === HOLD_TABLE_NAME && c.policy === 'drop');
  return HOLD_TABLES.every((t) => HOLD_CHAINS.every((h) => chains.some((c) => c.table.family === t.family && c.hook === h.hook)));
}
