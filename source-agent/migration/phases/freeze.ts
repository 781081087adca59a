/**
 * freeze: the lease is armed first (if this agent goes silent, its guard thaws the task), then CRIU dumps the
 * tree and leaves it stopped. The images go to a fresh directory under the images root (tmpfs by default),
 * held under a lease (images-dir.ts). Before any of that, while the task still runs: what killed agents left
 * under the images root is removed and old CRIU logs are pruned.
 *
 * A dump with --tcp-established leaves the stopped tree's sockets in TCP repair mode and CRIU's network lock in
 * place: its undo (tcp-dump-undo.ts) is pushed above the thaw, so that a rollback runs it first; after a commit
 * the same step only deletes the lock, once the original is gone. The freeze's journal entry names the lock,
 * for a resolver that undoes the migration after this process died (resolver.ts).
 *
 * A task in its own network namespace (`ferry run --net`) is held right before the dump (task-network-hold.ts:
 * nothing of it on the wire; CRIU carries the hold to the copy). Its undo sits above the tcp one: a rollback
 * lets go of the hold and announces the original's addresses first, then takes the sockets out of repair,
 * then thaws. After the commit, once the original is gone, the same step deletes the veth's outer end. The
 * hold is journaled with the freeze (with the outer end's ifindex: only that link is ever deleted), and the
 * freeze guard's undo command lets go of it too. The network read here must be the one Negotiate sent (the dest
 * probed those addresses, and restores what the dump carries): else TASK_NETWORK_CHANGED before anything is made.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { injectFault } from '../../../shared/fault-injection.js';
import { FerryError } from '../../../shared/errors/ferry-error.js';
import { criuLogFileName, pruneCriuLogs } from '../../../shared/criu/criu-log-files.js';
import { createImagesDir, sweepImagesRoot } from '../../images-dir.js';
import type { DumpKind, FreezeLeasePort, TreeMember } from '../ports.js';
import type { MigrationContext } from '../migration-context.js';
import type { UndoHandle } from '../rollback-stack.js';
import type { Negotiated } from './negotiate.js';
import type { CriuFeatures } from '../../../shared/criu/criu-features.js';
import { chooseCriuFeatures } from '../criu-features-choice.js';
import type { TcpDumpLock, TcpDumpUndoReport } from '../../../shared/criu/tcp-dump-undo.js';
import type { TaskMountNamespace } from '../../../shared/kernel/task-mount-namespace.js';
import { taskNetworkChange, type TaskNetwork } from '../../../shared/kernel/task-network.js';
import type { HoldReleaseReport, TaskNetworkHold } from '../../../shared/kernel/task-network-hold.js';

export interface Frozen {
  /** The tree as it was frozen: the final delta reads these processes. */
  tree: TreeMember[];
  lease: FreezeLeasePort;
  /** Released once the dest runs the copy: from then on nothing may resume the original. */
  thaw: UndoHandle;
  /** Resumes the original after the commit (its copy on the dest was killed): the undo of the dump first. */
  resume(): Promise<void>;
  imagesDir: string;
  dumpKind: DumpKind;
  /** performance.now() at the freeze: downtime counts from here. */
  frozenAt: number;
  dumpMs: number;
  /** What the dump used; the restore must use the same. */
  criuFeatures: CriuFeatures;
  /** The task's own mount namespace, as the dump declared it; the restore rebuilds it. */
  mountNs: TaskMountNamespace | undefined;
  /** The task's own network identity, as it was at the freeze; the restore re-attaches it on the dest. */
  taskNetwork: TaskNetwork | undefined;
}

/**
 * `onImagesDir` learns the directory as soon as it exists, so that it is removed whatever happens next. The
 * rollback stack's "remove the images dir" (run on every ending, after the thaw) removes it and drops its lease.
 */
export async function freeze(ctx: MigrationContext, n: Negotiated, onImagesDir: (dir: string) => void): Promise<Frozen> {
  const { host, opts, migrationId } = ctx;
  const rootPid = n.target.rootPid;
  // Looked at again while the task still runs: a lock taken or a connection made during pre-copy counts.
  const criu = chooseCriuFeatures(opts.criuFeatures, host.criuNeeds(host.tree(rootPid).map((t) => t.hostPid)), n.criu.networkLock ?? (await host.networkLock()), n.destInfo);
  const mountNs = host.mountNamespace(rootPid);
  if (mountNs) ctx.log.info('the task has its own mount namespace', { externalMounts: mountNs.externalMounts.length });
  const peer = host.taskNetwork(rootPid);
  const taskNetwork = peer?.network;
  const changed = taskNetworkChange(n.taskNetwork, taskNetwork);
  // Before the hold and the dump, the task untouched: a changed address would be restored unprobed, a network gone
  // at this read would be dumped with no hold.
  if (changed) throw new FerryError('TASK_NETWORK_CHANGED', { phase: 'freeze', side: 'source', sourceState: 'running', detail: changed });
  if (taskNetwork) ctx.log.info('the task has its own network namespace', { ...taskNetwork, outerIfindex: peer?.outerIfindex });
  if (criu.note !== n.criu.note) ctx.log.info('criu features at the freeze', { ...criu.features, networkLock: criu.networkLock, note: criu.note });
  await sweepImagesRoot(opts.imagesRoot, ctx.log);
  const logsDir = join(opts.imagesRoot, 'logs');
  await mkdir(logsDir, { recursive: true });
  await pruneCriuLogs(logsDir).catch((e: unknown) => ctx.log.warn('CRIU logs not pruned', { logsDir, error: String(e) }));
  const images = await createImagesDir(opts.imagesRoot, migrationId);
  onImagesDir(images.dir);
  // Pushed before the thaw, so that a rollback thaws first. A failed removal is not the task's state: logged.
  ctx.rollback.push('remove the images dir', () =>
    images.release().catch((e: unknown) => ctx.log.warn('images dir not removed; the next sweep removes it', { dir: images.dir, error: String(e) })),
  );
  const imagesDir = images.dir;
  const tree = host.tree(rootPid);
  const lease = host.armFreezeLease(opts.freezeTimeoutMs, rootPid, tree.map((t) => t.hostPid));
  const frozen: { at?: number } = {};
  const thawStep = ctx.rollback.push('thaw the original', async () => {
    await lease.release();
    host.signalTree(rootPid, 'SIGCONT');
    ctx.sourceState = 'running';
    if (frozen.at !== undefined) ctx.log.info('original thawed', { frozenMs: Math.round(performance.now() - frozen.at) });
  });
  const logFile = join(logsDir, criuLogFileName(migrationId, 'dump'));
  const tcpLock = criu.features.tcpEstablished ? host.tcpDumpLock(rootPid, logFile) : undefined;
  const tcpUndo = tcpLock ? pushTcpDumpUndo(ctx, tree, tcpLock, thawStep) : undefined;
  const hold: TaskNetworkHold | undefined = taskNetwork ? { netns: `/proc/${rootPid}/ns/net`, network: taskNetwork } : undefined;
  const holdUndo = hold && peer ? pushHoldUndo(ctx, hold, peer.outerIfindex, tcpUndo?.thaw ?? thawStep) : undefined;
  const thaw = holdUndo?.thaw ?? tcpUndo?.thaw ?? thawStep;
  if (tcpLock || hold) {
    // If this process dies from here on, the guard thaws the tree: it must undo the dump (and the hold) first.
    const undo = host.tcpDumpUndoCommand(tree.map((t) => t.hostPid), tcpLock, hold);
    if (undo) lease.runBeforeThaw(undo);
    else ctx.log.warn('the freeze guard cannot undo a tcp-established dump or a network hold here (tcp-dump-undo-main.js is not built): if this process dies, the resolver does');
  }
  await ctx.journal.record('frozen', { imagesDir, ...(tcpLock ? { tcpLock } : {}), ...(hold ? { hold, outerIfindex: peer?.outerIfindex } : {}) });
  const frozenAt = (frozen.at = performance.now());
  ctx.sourceState = 'frozen';
  // Right before the dump, the freeze clock running: the task still runs, only its packets wait.
  if (hold) {
    try {
      host.holdTaskNetwork(hold);
    } catch (e) {
      throw new FerryError('NETWORK_HOLD_FAILED', { phase: 'freeze', side: 'source', sourceState: 'frozen', detail: `${hold.netns}: ${e instanceof Error ? e.message : String(e)}`, cause: e });
    }
  }
  const dumpKind = await host.dump({
    pid: rootPid,
    imagesDir,
    logFile,
    timeoutMs: opts.freezeTimeoutMs,
    mode: opts.dumpMode,
    features: criu.features,
    networkLock: criu.networkLock,
    mountNs,
    // If this agent dies now, the guard lets criu finish before it thaws (a killed dump can kill the task).
    onCriuStarted: (pid) => {
      lease.waitForDump(pid);
      try {
        injectFault('source.dump-running');
      } catch {
        /* only kill and stop act here: nothing may fail a running dump from outside */
      }
    },
  });
  // After the commit (the thaw released): what a lazy restore's failed fill resumes the original with.
  const resume = async (): Promise<void> => {
    await holdUndo?.undoNow();
    tcpUndo?.undoNow();
    host.signalTree(rootPid, 'SIGCONT');
    ctx.sourceState = 'running';
  };
  return { tree, lease, thaw, resume, imagesDir, dumpKind, frozenAt, dumpMs: performance.now() - frozenAt, criuFeatures: criu.features, mountNs, taskNetwork };
}

function logUndo(ctx: MigrationContext, what: string, report: TcpDumpUndoReport): void {
  const fields = { released: report.released, tableDeleted: report.tableDeleted, note: report.note, errors: report.errors };
  if (report.errors.length > 0) ctx.log.error(what, fields);
  else ctx.log.info(what, fields);
}

/** `handle`, telling `released` first when it is released (the commit: the step above no longer thaws). */
function onRelease(handle: UndoHandle, released: () => void): UndoHandle {
  return {
    what: handle.what,
    release: () => {
      released();
      handle.release();
    },
  };
}

/** How long a commit waits for the killed original to be gone before it deletes CRIU's lock. */
const GONE_BEFORE_UNLOCK_MS = 5_000;

/**
 * Pushes the undo of a --tcp-established dump above the thaw and returns the thaw's handle, wrapped: once the
 * thaw is released (the commit), the step no longer resumes sockets of an original that must stay stopped.
 * Ending the migration it then deletes only the lock, after the original is gone (a committed migration).
 * `undoNow` is the same undo for a thaw after the commit (a lazy restore's failed fill): the step then skips it.
 */
function pushTcpDumpUndo(ctx: MigrationContext, tree: readonly TreeMember[], lock: TcpDumpLock, thawStep: UndoHandle): { thaw: UndoHandle; undoNow: () => void } {
  const { host } = ctx;
  const startTimes = new Map(tree.map((t) => [t.hostPid, host.startTime(t.hostPid)]));
  // Only the frozen tree's processes, while their pid is still theirs: a pid reused since is never touched.
  const original = (): number[] => tree.map((t) => t.hostPid).filter((pid) => startTimes.get(pid) !== undefined && host.startTime(pid) === startTimes.get(pid));
  let thawReleased = false;
  let undone = false;
  const undo = (): string[] => {
    undone = true;
    const report = host.undoTcpDump(original(), lock);
    logUndo(ctx, 'tcp-established dump undone', report);
    return report.errors;
  };
  ctx.rollback.push("take the original's sockets out of TCP repair and delete CRIU's lock", async () => {
    let errors: string[];
    if (ctx.sourceState === 'gone') {
      const report = await host.dropTcpDumpLock(tree.map((t) => t.hostPid), lock, GONE_BEFORE_UNLOCK_MS);
      logUndo(ctx, "CRIU's lock after the kill", report);
      errors = report.errors;
    } else if (!thawReleased) errors = undo();
    else return; // frozen for a commit whose answer is still open, or undone already by the thaw after the commit
    if (errors.length > 0) throw new Error(errors.join('; '));
  });
  return {
    thaw: onRelease(thawStep, () => (thawReleased = true)),
    undoNow: () => {
      if (undone) return;
      const errors = undo();
      if (errors.length > 0) ctx.log.error('the tcp-established dump is not fully undone: its connections may be reset or blocked', { errors });
    },
  };
}

function logHoldRelease(ctx: MigrationContext, what: string, report: HoldReleaseReport): void {
  if (report.errors.length > 0) ctx.log.error(what, { ...report });
  else ctx.log.info(what, { ...report });
}

/**
 * Pushes the hold's undo above the tcp one (a rollback runs it first) and returns `thaw` wrapped as
 * pushTcpDumpUndo does. Rolling back: the hold let go in the original's namespace and its addresses announced.
 * Ending after the commit (sourceState 'gone': the original was killed, though the bounded wait for it may have
 * timed out): the veth's outer end deleted if it still has the journaled ifindex (it usually went with the
 * namespace). Frozen for a commit whose answer is open: nothing.
 */
function pushHoldUndo(ctx: MigrationContext, hold: TaskNetworkHold, outerIfindex: number, thaw: UndoHandle): { thaw: UndoHandle; undoNow: () => Promise<void> } {
  const { host } = ctx;
  let thawReleased = false;
  let undone = false;
  const undo = async (): Promise<string[]> => {
    undone = true;
    const report = await host.releaseTaskNetworkHold(hold);
    logHoldRelease(ctx, "the original's network hold let go", report);
    return report.errors;
  };
  ctx.rollback.push("let go of the original's network hold and announce its addresses", async () => {
    if (ctx.sourceState === 'gone') {
      const outcome = host.deleteOuterLink(hold.network.outerLink, outerIfindex);
      ctx.log.info("the original's veth after the commit", { outerLink: hold.network.outerLink, outerIfindex, outcome });
      return;
    }
    if (thawReleased || undone) return;
    const errors = await undo();
    if (errors.length > 0) throw new Error(errors.join('; '));
  });
  return {
    thaw: onRelease(thaw, () => (thawReleased = true)),
    undoNow: async () => {
      if (undone) return;
      const errors = await undo();
      if (errors.length > 0) ctx.log.error('the network hold is not fully let go: the original may be unreachable', { errors });
    },
  };
}
