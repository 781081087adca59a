/**
 * precopy: rounds while the task runs, until the policy says freeze (or abort). Auto-converge throttling
 * starts here and is always released before this returns or throws: the freeze must find the task unthrottled.
 */
import { FerryError } from '../../../shared/errors/ferry-error.js';
import type { PageHashIndex } from '../../../shared/pages/page-hash-index.js';
import { switchBeforeRead, type EarlySwitch } from '../../../shared/policy/post-copy-switch.js';
import { DEFAULT_THROTTLE, decideAfterRound, transferRate, type ConvergencePolicy, type RoundRecord } from '../../../shared/policy/convergence.js';
import { fixedCost, loadCostSamples } from '../../cost-model.js';
import type { TrackedTask } from '../../trackers/tracker.js';
import type { RoundSummary } from '../events.js';
import type { MigrationContext } from '../migration-context.js';
import type { ThrottlePort } from '../ports.js';
import type { Negotiated } from './negotiate.js';
import type { Prepared } from './prepare.js';

/** How often a running round announces what it has sent (metrics, `ferry migrate`'s status line). */
export const PROGRESS_EVERY_MS = 500;

export interface Precopied {
  rounds: RoundSummary[];
  /** Why the freeze came, in words. */
  decision: string;
  throttle: { method: string; maxPercent: number } | undefined;
  /** What the dest holds, per task key: page -> hash. The final delta sends only what differs. */
  held: Map<number, PageHashIndex>;
  /** The policy chose post-copy: the final delta sends no task page the dest lacks; the fill sends them. */
  postCopy: boolean;
}

export async function precopy(ctx: MigrationContext, n: Negotiated, p: Prepared): Promise<Precopied> {
  const held = new Map<number, PageHashIndex>();
  if (ctx.opts.noPrecopy) return { rounds: [], decision: 'pre-copy off (stop-and-copy): freezing at once', throttle: undefined, held, postCopy: false };
  const { host, opts, signal, announcer } = ctx;
  const { tracker, stream } = p;
  const rootPid = n.target.rootPid;
  const history: RoundRecord[] = [];
  const rounds: RoundSummary[] = [];
  const samples = await loadCostSamples(opts.to, opts.costModelPath);
  const policy: ConvergencePolicy = {
    maxRounds: opts.maxRounds,
    maxDowntimeMs: opts.maxDowntimeMs,
    floorPages: opts.floorPages,
    pageSize: host.pageSize,
    onNoConverge: opts.onNoConverge,
    postCopyAlways: opts.postCopy === 'always',
    ...DEFAULT_THROTTLE,
  };
  let throttle: ThrottlePort | undefined;
  let maxThrottle = 0;
  let readMs = 0;
  let readBytes = 0;
  let lastProgress = performance.now();
  try {
    for (let round = 0; ; round++) {
      ctx.round = round;
      signal.throwIfAborted();
      const tasks: TrackedTask[] = host.tree(rootPid).map((t) => ({ hostPid: t.hostPid, key: t.nsPid }));
      if (tasks.length === 0) throw new FerryError('TASK_EXITED', { phase: 'precopy', side: 'source', sourceState: 'gone' });
      const t0 = performance.now();
      // --post-copy auto: a dirty set that cannot converge switches before its round is sent (an exact tracker asks).
      let early: EarlySwitch | undefined;
      const beforeRead =
        opts.onNoConverge === 'postcopy' && round > 0
          ? (candidates: number): boolean => !(early = switchBeforeRead(history, candidates, { pageSize: host.pageSize, maxDowntimeMs: opts.maxDowntimeMs }))
          : undefined;
      const stats = await tracker.round(
        tasks,
        held,
        async (task, batch) => {
          await stream.send(task, round, batch);
          // A round can last minutes: its progress, at most twice a second, so a scrape every second sees it move.
          const now = performance.now();
          if (now - lastProgress >= PROGRESS_EVERY_MS) {
            lastProgress = now;
            announcer.announce({ kind: 'progress', phase: 'precopy', round, pagesSent: stream.pagesSent, bytesSent: stream.bytesSent });
          }
        },
        signal,
        beforeRead,
      );
      if (stats.stoppedBeforeRead && early) {
        // Nothing of this round was sent: it is no round of the history, only the reason the pre-copy ended.
        announcer.announce({
          kind: 'decision',
          action: 'postcopy',
          rule: early.rule,
          message: early.reason,
          expectedDowntimeMs: undefined,
          dirtyRateBytesPerSecond: undefined,
          transferRateBytesPerSecond: transferRate(history),
          fixedCostMs: 0,
          throttlePercent: throttle?.percent ?? 0,
          remainingBytes: stats.dirtyPages * host.pageSize,
        });
        return { rounds, decision: early.reason, throttle: throttle ? { method: throttle.method, maxPercent: maxThrottle } : undefined, held, postCopy: true };
      }
      await stream.flush(); // the round ends when the dest holds it: its time includes the transfer
      const durationMs = performance.now() - t0;
      readMs += stats.readMs;
      readBytes += stats.bytesRead;
      const summary: RoundSummary = {
        round,
        presentPages: stats.presentPages,
        dirtyPages: stats.dirtyPages,
        zeroPages: stats.zeroPages,
        bytesSent: stats.bytesSent,
        bytesRead: stats.bytesRead,
        durationMs,
        transferMs: Math.max(1, durationMs - stats.readMs),
        throttlePercent: throttle?.percent ?? 0,
        codec: p.compression.roundCodec(round),
        wireBytes: p.compression.rounds.get(round)?.wireBytes ?? stats.bytesSent,
      };
      rounds.push(summary);
      history.push(summary);
      announcer.announce({ kind: 'round', round: summary, pagesSent: stream.pagesSent, bytesSent: stream.bytesSent, rateBytesPerSecond: transferRate(history) ?? 0 });

      const residentBytes = stats.presentPages * host.pageSize;
      const cost = fixedCost(
        samples,
        residentBytes,
        {
          readBytesPerSecond: readMs > 0 ? (readBytes * 1000) / readMs : undefined,
          storeBytesPerSecond: stream.storeMicros > 0 ? (stream.storedBytes * 1e6) / stream.storeMicros : undefined,
        },
        n.target.vmas,
        n.restore.mode,
      );
      const decision = decideAfterRound({ history, fixedCost: cost, throttlePercent: throttle?.percent ?? 0, residentBytes }, policy);
      announcer.announce({
        kind: 'decision',
        action: decision.action,
        rule: decision.rule,
        message: decision.reason,
        expectedDowntimeMs: decision.expectedDowntimeMs,
        dirtyRateBytesPerSecond: decision.dirtyRateBytesPerSecond,
        transferRateBytesPerSecond: decision.transferRateBytesPerSecond,
        fixedCostMs: cost.ms,
        throttlePercent: decision.throttlePercent,
        remainingBytes: stats.dirtyPages * host.pageSize,
      });
      switch (decision.action) {
        case 'continue':
          break;
        case 'throttle':
          throttle ??= await host.createThrottle(rootPid, ctx.log);
          await throttle.set(decision.throttlePercent);
          maxThrottle = Math.max(maxThrottle, decision.throttlePercent);
          break;
        case 'abort':
          throw new FerryError('PRECOPY_NOT_CONVERGING', { phase: 'precopy', side: 'source', sourceState: 'running', detail: decision.reason });
        case 'freeze':
        case 'postcopy':
          return { rounds, decision: decision.reason, throttle: throttle ? { method: throttle.method, maxPercent: maxThrottle } : undefined, held, postCopy: decision.action === 'postcopy' };
      }
    }
  } finally {
    await throttle?.release();
    // A quota not restored leaves the task slower than it was: say so where the operator looks.
    for (const e of throttle?.errors ?? []) ctx.log.error('the throttle could not be fully released', { method: throttle?.method, err: e });
  }
}
