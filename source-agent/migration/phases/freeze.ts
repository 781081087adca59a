/**
 * freeze: the lease is armed first (if this agent goes silent, its guard thaws the task), then CRIU dumps the
 * tree and leaves it stopped. The images go to a fresh directory under the images root (tmpfs by default),
 * held under a lease (images-dir.ts). Before any of that, while the task still runs: what killed agents left
 * under the images root is removed and old CRIU logs are pruned.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { injectFault } from '../../../shared/fault-injection.js';
import { criuLogFileName, pruneCriuLogs } from '../../../shared/criu/criu-log-files.js';
import { createImagesDir, sweepImagesRoot } from '../../images-dir.js';
import type { DumpKind, FreezeLeasePort, TreeMember } from '../ports.js';
import type { MigrationContext } from '../migration-context.js';
import type { UndoHandle } from '../rollback-stack.js';
import type { Negotiated } from './negotiate.js';
import type { CriuFeatures } from '../../../shared/criu/criu-features.js';
import { chooseCriuFeatures } from '../criu-features-choice.js';
import type { TaskMountNamespace } from '../../../shared/kernel/task-mount-namespace.js';

export interface Frozen {
  /** The tree as it was frozen: the final delta reads these processes. */
  tree: TreeMember[];
  lease: FreezeLeasePort;
  /** Released once the dest runs the copy: from then on nothing may resume the original. */
  thaw: UndoHandle;
  imagesDir: string;
  dumpKind: DumpKind;
  /** performance.now() at the freeze: downtime counts from here. */
  frozenAt: number;
  dumpMs: number;
  /** What the dump used; the restore must use the same. */
  criuFeatures: CriuFeatures;
  /** The task's own mount namespace, as the dump declared it; the restore rebuilds it. */
  mountNs: TaskMountNamespace | undefined;
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
  const thaw = ctx.rollback.push('thaw the original', async () => {
    await lease.release();
    host.signalTree(rootPid, 'SIGCONT');
    ctx.sourceState = 'running';
    if (frozen.at !== undefined) ctx.log.info('original thawed', { frozenMs: Math.round(performance.now() - frozen.at) });
  });
  await ctx.journal.record('frozen', { imagesDir });
  const frozenAt = (frozen.at = performance.now());
  ctx.sourceState = 'frozen';
  const dumpKind = await host.dump({
    pid: rootPid,
    imagesDir,
    logFile: join(logsDir, criuLogFileName(migrationId, 'dump')),
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
  return { tree, lease, thaw, imagesDir, dumpKind, frozenAt, dumpMs: performance.now() - frozenAt, criuFeatures: criu.features, mountNs };
}
