/** What this host offers to a peer in Negotiate: versions, platform, trackers, CRIU. */
import { hostname, release } from 'node:os';
import { probeCriu } from './criu/criu-binary.js';
import { probeNetworkLock, TCP_ESTABLISHED_FEATURE } from './criu/criu-features.js';
import { ferryVersion } from './repo-root.js';
import type { PeerInfo } from './transport/messages.js';
import { PROTOCOL_VERSIONS_SUPPORTED } from './transport/proto.js';
import { PAGE_SIZE } from './kernel/page-size.js';
import { hostCpuFlags } from './kernel/cpu-flags.js';
import { hostAddresses } from './kernel/host-addresses.js';

/**
 * The protocol versions this build speaks. FERRY_TEST_PROTOCOL_VERSIONS (comma-separated) replaces them; it
 * exists so that tests can start an agent that speaks another version, and is not meant for operators.
 */
export function protocolVersions(): number[] {
  const forced = process.env.FERRY_TEST_PROTOCOL_VERSIONS;
  if (forced) return forced.split(',').map((v) => Number(v.trim())).filter((v) => Number.isInteger(v) && v > 0);
  return [...PROTOCOL_VERSIONS_SUPPORTED];
}

export const FEATURES = ['page-hash-xxh3-128', 'zero-page-flag'];
/**
 * Offered by a dest that can restore lazily (its pager binary is built and the kernel has userfaultfd with
 * non-cooperative events); not required of a peer: without it the source restores eagerly.
 */
export const LAZY_RESTORE_FEATURE = 'lazy-restore';
/**
 * Offered by a dest that answers Negotiate's external_mounts with the missing ones; without it (an older
 * dest) the source's preflight cannot compare, and the dest's Restore is the first to refuse.
 */
export const MOUNT_PATHS_FEATURE = 'mount-paths';
/**
 * Offered by a dest that serves page channels (the data plane beside gRPC; docs/protocol.md, "Page channels"):
 * its Prepare answers a port and a token when asked. Without it the source streams pages over StreamPages.
 */
export const PAGE_CHANNELS_FEATURE = 'page-channels';
/**
 * Offered by a dest that checks a task's own network (`ferry run --net`) in Negotiate: its bridge, and that the
 * task's addresses are free on it. Without it (an older dest) the source refuses such a task (FERRY-1215).
 */
export const TASK_NETWORK_FEATURE = 'task-network';

/**
 * `trackers`: the trackers this host could run as a source, probed by the caller (the source agent's own
 * probes; the dest agent gets them from whoever starts it), so that this layer knows no tracker. `moreFeatures`:
 * what the agent itself offers beyond this build's (the dest's `lazy-restore`).
 */
export async function localPeerInfo(trackers: readonly string[], moreFeatures: readonly string[] = []): Promise<PeerInfo> {
  const criu = await probeCriu();
  // A side without a network lock cannot dump or restore an established connection: it says so by omission.
  const tcp = criu.ok && (await probeNetworkLock(criu.path)) !== undefined ? [TCP_ESTABLISHED_FEATURE] : [];
  return {
    ferryVersion: ferryVersion(),
    protocolVersions: protocolVersions(),
    pageSize: PAGE_SIZE,
    arch: process.arch,
    kernel: release(),
    hostname: hostname(),
    trackers: [...trackers],
    criuVersion: criu.ok ? criu.version : '',
    criuProblem: criu.ok ? '' : criu.reason,
    features: [...FEATURES, ...tcp, ...moreFeatures],
    cpuFlags: hostCpuFlags(),
    addresses: hostAddresses(),
    nodeVersion: process.version,
  };
}

/** The highest protocol version both sides speak, or 0. */
export function chooseProtocolVersion(ours: readonly number[], theirs: readonly number[]): number {
  const common = ours.filter((v) => theirs.includes(v));
  return common.length === 0 ? 0 : Math.max(...common);
}
