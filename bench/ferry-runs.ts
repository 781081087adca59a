/**
 * One `ferry migrate PID --to DEST --json [flags]` inside the src host (testbed/two-hosts.ts), turned into
 * a MethodOutcome. For the live method the task's work rate is sampled while the pre-copy rounds run.
 */
import { describeResult, startMigrate, type DestAgentHandle, type FerryLine, type TwoHosts } from '../testbed/two-hosts.js';
import type { MemtestHandle } from '../testbed/workloads/memtest.js';
import type { Method } from './cases.js';
import type { MethodOutcome } from './results.js';
import { monoNowMs, PrecopySampler, type Sample } from './work-rate.js';

export interface FerryContext {
  hosts: TwoHosts;
  dest: DestAgentHandle;
  task: MemtestHandle;
  method: Method;
  /** FERRY_IMAGES_DIR for the source's final dump. */
  imagesDir: string;
  signal: AbortSignal;
  timeoutMs: number;
}

export interface FerryOutcome extends MethodOutcome {
  /** Pages rewritten per second during pre-copy, when it lasted long enough to tell. */
  precopyWritesPerSec: number | undefined;
  /** The sampler's last sample of the original, before the freeze (live methods). */
  lastPrecopySample: Sample | undefined;
  /** Monotonic ms when the first line past pre-copy (the freeze) and the `fill` phase line (lazy) came. */
  freezeSeenMonoMs: number | undefined;
  fillSeenMonoMs: number | undefined;
  /** stderr of `ferry migrate` (its JSON log), kept for a failed run. */
  stderr: string;
}

const isFreezeStart = (l: FerryLine): boolean =>
  (l.kind === 'decision' && l.action === 'freeze') || (l.kind === 'phase' && l.phase !== 'prepare' && l.phase !== 'precopy');

export class FerryRunError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export async function ferryMigrate(ctx: FerryContext): Promise<FerryOutcome> {
  const run = startMigrate(ctx.hosts, ctx.task.rootPid, ctx.dest, {
    args: [...ctx.method.ferryFlags],
    env: { FERRY_IMAGES_DIR: ctx.imagesDir },
    timeoutMs: ctx.timeoutMs,
  });
  // Ctrl-C: SIGTERM makes ferry roll back (the task resumes at the source); SIGKILL if it does not end.
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    run.child.kill('SIGTERM');
    killTimer = setTimeout(() => run.child.kill('SIGKILL'), 15_000);
  };
  ctx.signal.addEventListener('abort', onAbort, { once: true });

  // When the lines came: the freeze's start, and (lazy) the fill's, which the CLI enters at the Commit's answer.
  const budget = ctx.timeoutMs + 10_000;
  const seen = (match: (l: FerryLine) => boolean): Promise<number | undefined> =>
    run.waitForLine(match, budget).then(
      () => monoNowMs(),
      () => undefined,
    );
  const freezeSeen = seen(isFreezeStart);
  const fillSeen = seen((l) => l.kind === 'phase' && l.phase === 'fill');

  let precopyWritesPerSec: number | undefined;
  let lastPrecopySample: Sample | undefined;
  const sampling = ctx.method.stopAndCopy
    ? Promise.resolve()
    : (async () => {
        // The pre-copy phase event comes once the dest session is open; sample until the freeze decision.
        const started = await run.waitForLine((l) => l.kind === 'phase' && l.phase === 'precopy', budget).then(
          () => true,
          () => false,
        );
        if (!started) return;
        const sampler = new PrecopySampler(ctx.task);
        sampler.start();
        await run.waitForLine(isFreezeStart, budget).catch(() => undefined);
        precopyWritesPerSec = await sampler.stop();
        lastPrecopySample = sampler.last();
      })();

  const result = await run.done;
  await sampling;
  const freezeSeenMonoMs = await freezeSeen;
  const fillSeenMonoMs = await fillSeen;
  ctx.signal.removeEventListener('abort', onAbort);
  clearTimeout(killTimer);
  ctx.signal.throwIfAborted();
  const s = result.summary;
  if (result.exitCode !== 0 || !s) {
    throw new FerryRunError(`ferry migrate (${ctx.method.id}) failed: ${describeResult(result)}`, result.stderr);
  }
  const p = s.phases;
  const decisions = result.lines.filter((l) => l.kind === 'decision');
  const freeze = decisions.findLast((d) => d.action === 'freeze');
  return {
    downtimeMs: s.downtimeMs,
    totalMs: s.totalMs,
    // Post-copy's bytes go after the resume (the fill): not in pageBytesSent, still over the link.
    bytesSent: s.pageBytesSent + s.imageBytesSent + (s.postcopyBytes ?? 0),
    rounds: s.rounds.length,
    restoredPid: s.restoredPid,
    phases: { dump: p.dumpMs ?? 0, transfer: p.finalDeltaMs ?? 0, rebuild: p.rebuildMs ?? 0, restore: p.restoreMs ?? 0, commit: p.commitMs ?? 0 },
    decision: s.decision,
    freezeRule: freeze?.rule,
    throttle: s.throttle ? `${s.throttle.method} up to ${s.throttle.maxPercent} %` : undefined,
    detail: { summary: s, migrateWallMs: result.durationMs, decisions },
    restoreMode: s.restoreMode,
    fill:
      s.restoreMode === 'lazy'
        ? {
            fillMs: s.fillMs,
            faults: s.fillFaults,
            faultsWaited: s.fillFaultsWaited,
            replacedPages: s.replacedPages,
            confirmedPages: s.confirmedPages,
            dumpPages: s.dumpPages,
            filledPages: s.filledPages,
            pagerFillUs: s.pagerFillUs,
            remotePages: s.remotePages,
            faultWaitP50Us: s.faultWaitP50Us,
            faultWaitP99Us: s.faultWaitP99Us,
          }
        : undefined,
    // A summary before issue 12 has no split: leave it out rather than report zeros.
    phaseBytes: typeof s.precopyBytes === 'number' ? { precopy: s.precopyBytes, downtime: s.downtimeBytes, postcopy: s.postcopyBytes } : undefined,
    dumpPages: s.dumpPages,
    postCopied: s.postCopied,
    precopyWritesPerSec,
    lastPrecopySample,
    freezeSeenMonoMs,
    fillSeenMonoMs,
    stderr: result.stderr,
  };
}
