/**
 * What a peer may send the dest, checked before anything uses a field: every string and list has a bound,
 * every duration a range, and a refusal names the field and its bound, never the value (a peer's 100,000
 * characters must not travel back in the error, nor into the log).
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import type * as m from '../shared/transport/messages.js';
import { MAX_CPU_FLAG_LENGTH, MAX_CPU_FLAGS } from '../shared/kernel/cpu-flags.js';
import { MAX_ADDRESS_LENGTH, MAX_HOST_ADDRESSES } from '../shared/kernel/host-addresses.js';
import { isCanonicalCidr } from '../shared/kernel/ip-cidr.js';
import { criuLinkNameProblem } from '../shared/kernel/link-name.js';
import { macProblem } from '../shared/kernel/mac-address.js';
import { MAX_TASK_ADDRESSES } from '../shared/kernel/read-task-network.js';

/** A migration id, and so the name of its session dir (work-dir.ts): the source draws a UUID. */
export const MIGRATION_ID = /^[A-Za-z0-9-]{8,64}$/;

/** More tasks than any tree CRIU would carry; also what keeps the pid check below a millisecond or so. */
export const MAX_TASKS = 4096;
/** The source sends 256 pages a batch (page-batch.ts); far more is no source of ours. */
export const MAX_BATCH_PAGES = 4096;
/** As the source's --restore-timeout and --freeze-timeout allow (source-agent/config/migrate-options.ts). */
export const MAX_DURATION_MS = 3_600_000;
/** Linux's pid_max cannot exceed 2^22. */
const MAX_PID = 4_194_304;
const MAX_NAME = 256;
const MAX_REASON = 1024;
const MAX_PEER_LIST = 64;

const invalid = (phase: Phase | undefined, detail: string): FerryError => new FerryError('REQUEST_INVALID', { side: 'dest', phase, detail });

/** BAD_ARGUMENT for an id that is no migration id (shown by its length only). */
export function checkMigrationId(id: string, phase: Phase): void {
  if (!MIGRATION_ID.test(id)) throw new FerryError('BAD_ARGUMENT', { side: 'dest', phase, detail: `malformed migration id (${id.length} characters)` });
}

export function checkText(field: string, value: string, max: number, phase: Phase | undefined): void {
  if (value.length > max) throw invalid(phase, `${field} has ${value.length} characters, at most ${max} are allowed`);
}

export function checkListLength(field: string, length: number, max: number, phase: Phase | undefined): void {
  if (length > max) throw invalid(phase, `${field} has ${length} entries, at most ${max} are allowed`);
}

/** A duration in ms: 0 means the default; more than `max` is refused (a uint32 of 2^32-1 would overflow setTimeout). */
export function durationMs(field: string, value: number, dflt: number, phase: Phase, max = MAX_DURATION_MS): number {
  if (!Number.isInteger(value) || value < 0 || value > max) throw invalid(phase, `${field} must be from 0 (the default) to ${max} ms`);
  return value === 0 ? dflt : value;
}

/** An epoch is the source's random 64-bit draw; 0 is proto3's "unset". */
export function checkEpoch(epoch: string, phase: Phase): bigint {
  const e = /^\d{1,20}$/.test(epoch) ? BigInt(epoch) : -1n;
  if (e <= 0n || e >= 2n ** 64n) throw invalid(phase, 'the epoch must be a non-zero uint64');
  return e;
}

export function checkPeerInfo(p: m.PeerInfo | null | undefined): void {
  if (!p) return;
  for (const [field, value] of Object.entries({ ferryVersion: p.ferryVersion, arch: p.arch, kernel: p.kernel, hostname: p.hostname, criuVersion: p.criuVersion, nodeVersion: p.nodeVersion ?? '' })) {
    checkText(`source.${field}`, value, MAX_NAME, 'negotiate');
  }
  checkText('source.criuProblem', p.criuProblem, MAX_REASON, 'negotiate');
  checkText('source.lazyRestoreProblem', p.lazyRestoreProblem ?? '', MAX_REASON, 'negotiate');
  for (const [field, list] of Object.entries({ protocolVersions: p.protocolVersions, trackers: p.trackers, features: p.features })) {
    checkListLength(`source.${field}`, list.length, MAX_PEER_LIST, 'negotiate');
  }
  for (const t of [...p.trackers, ...p.features]) checkText('source.trackers/features entry', t, MAX_NAME, 'negotiate');
  checkListLength('source.cpuFlags', p.cpuFlags?.length ?? 0, MAX_CPU_FLAGS, 'negotiate');
  for (const f of p.cpuFlags ?? []) checkText('source.cpuFlags entry', f, MAX_CPU_FLAG_LENGTH, 'negotiate');
  checkListLength('source.addresses', p.addresses?.length ?? 0, MAX_HOST_ADDRESSES, 'negotiate');
  for (const a of p.addresses ?? []) checkText('source.addresses entry', a, MAX_ADDRESS_LENGTH, 'negotiate');
}

/** ADDRESS/PREFIX is at most 43 characters (an IPv6 address of 39, /128). */
const MAX_CIDR = 43;

/**
 * A TaskNetwork (Negotiate's, Restore's): interface names, the MAC, 1 to MAX_TASK_ADDRESSES CIDRs (IPv4, or IPv6 in
 * its RFC 5952 text, so that one address has one spelling). Lengths
 * are checked before any pattern, and a refusal names the field, never the value.
 */
export function checkTaskNetwork(field: string, n: m.TaskNetworkMessage, phase: Phase): void {
  for (const [name, value] of Object.entries({ inner_link: n.innerLink, outer_link: n.outerLink, bridge: n.bridge })) {
    checkText(`${field}.${name}`, value, 64, phase);
    // Refused at Negotiate, not only at Restore: else the task is frozen and dumped before the dest says no.
    if (criuLinkNameProblem(value)) throw invalid(phase, `${field}.${name} is not an interface name criu can be given (1-15 bytes of A-Z a-z 0-9 _ . -)`);
  }
  checkText(`${field}.mac`, n.mac, 17, phase);
  if (macProblem(n.mac) || n.mac !== n.mac.toLowerCase()) throw invalid(phase, `${field}.mac is not a unicast MAC in lower-case aa:bb:cc:dd:ee:ff`);
  checkListLength(`${field}.addresses`, n.addresses.length, MAX_TASK_ADDRESSES, phase);
  if (n.addresses.length === 0) throw invalid(phase, `${field}.addresses is empty: a task's own network has at least one address`);
  for (const a of n.addresses) {
    checkText(`${field}.addresses entry`, a, MAX_CIDR, phase);
    if (!isCanonicalCidr(a)) throw invalid(phase, `${field}.addresses holds an entry that is no canonical IPv4 or IPv6 host ADDRESS/PREFIX`);
  }
  if (new Set(n.addresses.map((a) => a.split('/')[0])).size !== n.addresses.length) throw invalid(phase, `${field}.addresses holds an address twice`);
}

/** Everything of a PrepareRequest but the pids' use on this host: ids, names, the pid list (bounded, no duplicates). */
export function checkPrepareRequest(req: m.PrepareRequest): bigint {
  checkMigrationId(req.migrationId, 'prepare');
  const epoch = checkEpoch(req.epoch, 'prepare');
  checkText('task_name', req.taskName, MAX_NAME, 'prepare');
  checkListLength('required_pids', req.requiredPids.length, MAX_TASKS, 'prepare');
  const seen = new Set<number>();
  for (const pid of req.requiredPids) {
    if (pid < 1 || pid > MAX_PID) throw invalid('prepare', `required_pids holds ${pid}, not a pid`);
    if (seen.has(pid)) throw invalid('prepare', `required_pids holds ${pid} twice`);
    seen.add(pid);
  }
  return epoch;
}

export function checkAbortReason(reason: string): void {
  checkText('reason', reason, MAX_REASON, 'rollback');
}

/** The manifests of a Restore: one per task at most, each naming an image by a bounded name. */
export function checkManifests(pages: readonly m.PagesImageManifest[]): void {
  checkListLength('pages', pages.length, MAX_TASKS, 'restore');
  for (const p of pages) checkText('pages.pagemap_image', p.pagemapImage, MAX_NAME, 'restore');
}

/** The page count of a batch, before it is decoded. */
export function checkBatchSize(batch: m.PageBatchMessage): void {
  checkListLength('page_numbers', Math.floor(batch.pageNumbers.length / 8), MAX_BATCH_PAGES, 'precopy');
}
