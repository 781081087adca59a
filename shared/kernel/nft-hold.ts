/**
 * The hold of a task's own network namespace: `table inet ferry-hold` and `table arp ferry-hold`, each with an
 * input and an output chain of policy drop, so that nothing of the namespace reaches the wire nor is reached
 * from it. The source adds it right before `criu dump`: the stopped original is then off the segment (it no
 * longer answers ARP, which the inet lock of CRIU does not stop: netns-tcp-lab, pitfall 3), and CRIU dumps
 * the tables with the namespace's ruleset, so that the copy on the dest comes back held too (CRIU deletes only
 * its own CRIU-* lock when it unlocks). Whichever copy is to run has the hold released: the dest's at the
 * commit, the source's at a rollback; then it announces its addresses (address-announce.ts).
 *
 * Chosen over setting the veth down (netns-tcp-lab: a link down costs about 1.1 s, through a failed ARP of
 * the restored socket): the links stay up, only the packets wait for the peer's next retransmission.
 *
 * Letting go is two steps, because the kernel makes a deleted base chain wait for an RCU grace period (about
 * 13 ms a transaction here, measured) while a new rule costs a fraction of a millisecond: openNetworkHold adds
 * an `accept` rule to each of the four chains (traffic flows at once; what waits for the resume), and
 * releaseNetworkHold deletes the tables (after the resume, off the downtime).
 */
import { acceptRuleMessage, countNftRules, deleteTableMessage, listNftBaseChains, listNftTables, newTableWithChains, nftBatch, type NftTable } from './nft-tables.js';
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

/**
 * Adds both hold tables in one transaction (all or nothing). A hold already there is replaced in the same
 * transaction: NEWTABLE and NEWCHAIN on existing ones keep their rules, and a leftover opened hold (its accept
 * rules in place: an agent died, or a deletion failed, after an open) would otherwise hold nothing. Throws
 * unless the namespace is then held whole.
 */
export function addNetworkHold(netns: string): void {
  const leftover = holdTablesIn(netns).map(deleteTableMessage);
  const errno = nftBatch(netns, [...leftover, ...HOLD_TABLES.flatMap((t) => newTableWithChains(t, HOLD_CHAINS))]);
  if (errno !== 0) throw new SystemCallError('netlink NEWTABLE/NEWCHAIN', errno, errnoName(errno), `the network hold in ${netns}`);
  if (!isNetworkHeld(netns)) throw new Error(`the network hold in ${netns} is not whole once added (another process changed its tables)`);
}

/** The hold tables there are in the namespace, whole or not, opened or not. */
export function holdTablesIn(netns: string): NftTable[] {
  const present = listNftTables(netns);
  return HOLD_TABLES.filter((t) => present.some((p) => p.family === t.family && p.name === t.name));
}

/** Lets traffic through a held namespace at once (an accept rule in each chain, one transaction); the tables stay. */
export function openNetworkHold(netns: string): void {
  const tables = holdTablesIn(netns);
  if (tables.length === 0) return;
  const errno = nftBatch(netns, tables.flatMap((t) => HOLD_CHAINS.map((c) => acceptRuleMessage(t, c.name))));
  if (errno !== 0) throw new SystemCallError('netlink NEWRULE', errno, errnoName(errno), `the network hold in ${netns}`);
}

/** Deletes the hold tables there are (one transaction); those deleted, as `family name` (none: there was no hold). */
export function releaseNetworkHold(netns: string): string[] {
  const tables = holdTablesIn(netns);
  if (tables.length === 0) return [];
  const errno = nftBatch(netns, tables.map(deleteTableMessage));
  if (errno !== 0) throw new SystemCallError('netlink DELTABLE', errno, errnoName(errno), `the network hold in ${netns}`);
  return tables.map((t) => `${t.family} ${t.name}`);
}

/** Whether the namespace is held whole: both tables, each with a dropping input and output chain, and no rule. */
export function isNetworkHeld(netns: string): boolean {
  const chains = listNftBaseChains(netns).filter((c) => c.table.name === HOLD_TABLE_NAME && c.policy === 'drop');
  const whole = HOLD_TABLES.every((t) => HOLD_CHAINS.every((h) => chains.some((c) => c.table.family === t.family && c.hook === h.hook)));
  return whole && HOLD_TABLES.every((t) => countNftRules(netns, t).size === 0);
}
