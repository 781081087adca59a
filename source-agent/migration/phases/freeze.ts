/**
 * freeze: the lease is armed first (if this agent goes silent, its guard thaws the task), then CRIU dumps the
 * tree and leaves it stopped. The images go to a fresh directory under the images root (tmpfs by default).
 */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import type { DumpKind, FreezeLeasePort, TreeMember } from '../ports.js';
import type { MigrationContext } from '../migration-context.js';
import type { UndoHandle } from '../rollback-stack.js';
import type { Negotiated } from './negotiate.js';

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
}

/** `onImagesDir` learns the directory as soon as it exists, so that it is removed whatever happens next. */
export async function freeze(ctx: MigrationContext, n: Negotiated, onImagesDir: (dir: string) => void): Promise<Frozen> {
  const { host, opts, migrationId } = ctx;
  const rootPid = n.target.rootPid;
  const tree = host.tree(rootPid);
  const lease = host.armFreezeLease(opts.freezeTimeoutMs, rootPid, tree.map((t) => t.hostPid));
  const frozen: { at?: number } = {};
  const thaw = ctx.rollback.push('thaw the original', async () => {
    await lease.release();
    host.signalTree(rootPid, 'SIGCONT');
    ctx.sourceState = 'running';
    if (frozen.at !== undefined) ctx.log.info('original thawed', { frozenMs: Math.round(performance.now() - frozen.at) });
  });
  await mkdir(opts.imagesRoot, { recursive: true });
  const imagesDir = await mkdtemp(join(opts.imagesRoot, `${migrationId}-`));
  onImagesDir(imagesDir);
  await ctx.journal.record('frozen', { imagesDir });
  const logsDir = join(opts.imagesRoot, 'logs');
  await mkdir(logsDir, { recursive: true });
  const frozenAt = (frozen.at = performance.now());
  ctx.sourceState = 'frozen';
  const dumpKind = await host.dump({ pid: rootPid, imagesDir, logFile: join(logsDir, `${migrationId}-dump.log`), timeoutMs: opts.freezeTimeoutMs, mode: opts.dumpMode });
  return { tree, lease, thaw, imagesDir, dumpKind, frozenAt, dumpMs: performance.now() - frozenAt };
}
