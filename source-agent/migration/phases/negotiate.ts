/**
 * negotiate: everything here only reads; a refusal touches nothing. The target is inspected, CRIU and both
 * peers are checked, the preflight (source-agent/preflight/) looks for anything CRIU would refuse or the dest
 * cannot provide, and only then is the task locked; the tracker is chosen (a probe of this kernel, never of
 * the task).
 */
import { ensurePrivateDirectory } from '../../../shared/kernel/private-dir.js';
import type { TrackerName } from '../../trackers/tracker.js';
import { checkPeers } from '../check-peers.js';
import type { TargetTree } from '../inspect-target.js';
import type { MigrationContext } from '../migration-context.js';
import { chooseRestoreMode, requirePostCopySupport, type RestoreMode } from '../restore-mode.js';
import type { DestPort, MigrationPorts } from '../ports.js';
import type { TaskLock } from '../../task-lock.js';
import type { PeerInfo } from '../../../shared/transport/messages.js';
import { chooseCriuFeatures, type ChosenCriuFeatures } from '../criu-features-choice.js';
import { preflightRefusal, runPreflight } from '../../preflight/preflight.js';
import { FerryError } from '../../../shared/errors/ferry-error.js';
import { localPageCodecs, type PageCodecName } from '../../../shared/pages/batch-codec.js';
import type { CompressMode } from '../../../shared/policy/compression-choice.js';
import { zstdProblem } from '../../../shared/native/zstd.js';
import type { TaskNetwork } from '../../../shared/kernel/task-network.js';

export interface Negotiated {
  target: TargetTree;
  /** Held until the migration ends: no other migration of this tree may start meanwhile. */
  taskLock: TaskLock;
  dest: DestPort;
  protocolVersion: number;
  tracker: { name: TrackerName; note: string };
  /** --restore resolved against the dest's features (only the dest decides whether lazy works). */
  restore: { mode: RestoreMode; note: string };
  /** The CRIU features the tree needs now; freeze looks again just before the dump. */
  criu: ChosenCriuFeatures;
  /** The dest's PeerInfo: freeze checks a feature turned on late against it. */
  destInfo: PeerInfo;
  /** The compressing page codecs both agents speak (this host offered, the dest accepted). */
  pageCodecs: PageCodecName[];
  /** The task's own network as Negotiate sent it (the dest probed these addresses): the freeze reads the same, or refuses. */
  taskNetwork: TaskNetwork | undefined;
}

/** Of this host's offer, what the dest accepted (an answer naming a codec not offered counts for nothing). */
function agreedPageCodecs(mode: CompressMode, offered: readonly PageCodecName[], accepted: readonly string[]): PageCodecName[] {
  const agreed = offered.filter((c) => accepted.includes(c));
  if (mode === 'zstd' && !agreed.includes('zstd')) {
    const detail = offered.includes('zstd') ? 'the dest accepts no zstd (its libzstd is missing, or it predates compression)' : `this host has no zstd: ${zstdProblem() ?? 'unknown'}`;
    throw new FerryError('COMPRESSION_UNAVAILABLE', { phase: 'negotiate', side: offered.includes('zstd') ? 'dest' : 'source', sourceState: 'running', detail });
  }
  return agreed;
}

/** On success the caller owns `taskLock` and `dest` and must release and close them; on failure it is done here. */
export async function negotiate(ctx: MigrationContext, ports: MigrationPorts): Promise<Negotiated> {
  const { host, opts, signal } = ctx;
  const target = host.inspectTarget(opts.pid);
  let dest: DestPort | undefined;
  let taskLock: TaskLock | undefined;
  try {
    await host.requireCriu();
    const local = await host.peerInfo();
    const pids = target.tasks.map((t) => t.hostPid);
    // Read before Negotiate: the dest answers which of the tree's external mount paths it lacks, and whether it
    // has the bridge of the task's own network, with its addresses free there.
    const facts = host.preflightFacts(pids);
    dest = await ports.connectDest(opts.to, opts.connectTimeoutMs, signal);
    const offered = opts.compress === 'off' ? [] : localPageCodecs();
    const taskNetwork = facts.tree.taskNetwork ?? null;
    const answer = await dest.negotiate({ source: local, externalMounts: facts.tree.externalMounts ?? [], pageCodecs: offered, taskNetwork }, signal);
    const protocolVersion = checkPeers(local, answer);
    const pageCodecs = agreedPageCodecs(opts.compress, offered, answer.pageCodecs ?? []);
    if (opts.postCopy !== 'off') requirePostCopySupport(answer.dest);
    const restore = chooseRestoreMode(opts.restore, answer.dest);
    const networkLock = await host.networkLock();
    const input = { ...facts, criuFeatures: opts.criuFeatures, networkLock, source: local, dest: answer.dest, missingMounts: answer.missingMounts, taskNetworkAnswer: answer.taskNetwork, arch: local.arch };
    const findings = runPreflight(input, opts.allow);
    const refusal = preflightRefusal(findings);
    if (refusal) throw refusal;
    for (const f of findings.filter((x) => x.verdict === 'note')) ctx.log.info('preflight note', { check: f.check, code: f.code, message: f.message });
    const criu = chooseCriuFeatures(opts.criuFeatures, host.criuNeeds(pids), networkLock, answer.dest);
    const tracker = await host.chooseTracker(opts.tracker);
    // Nothing was touched until here: every refusal above leaves the host and the task as they were.
    ensurePrivateDirectory(opts.imagesRoot); // the dump goes there: nobody else may swap or read it
    taskLock = host.lockTask(opts.taskLocksDir, target);
    ctx.announcer.announce({
      kind: 'started',
      migrationId: ctx.migrationId,
      pid: opts.pid,
      dest: opts.to,
      tasks: target.tasks.length,
      tracker: tracker.name,
      trackerNote: tracker.note,
    });
    ctx.log.info('restore mode', { mode: restore.mode, note: restore.note });
    ctx.log.info('criu features', { ...criu.features, networkLock: criu.networkLock, note: criu.note });
    if (opts.compress !== 'off') ctx.log.info('page codecs', { compress: opts.compress, codecs: pageCodecs });
    return { target, taskLock, dest, protocolVersion, tracker, restore, criu, destInfo: answer.dest, pageCodecs, taskNetwork: facts.tree.taskNetwork };
  } catch (e) {
    dest?.close();
    taskLock?.release();
    throw e;
  }
}
