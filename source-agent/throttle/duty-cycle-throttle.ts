/**
 * The duty-cycle throttle, for a tree without a cpu cgroup of its own: SIGSTOP the tree for `percent` % of
 * every period, then SIGCONT. It needs nothing from the host but the task can notice (SIGCONT handlers, a
 * parent waiting with WUNTRACED), and the stops are timed by this process's event loop, so a long stall here
 * stretches a stop. A thaw guard resumes the tree if this process dies while the tree is stopped, as the
 * freeze lease does for the freeze.
 */
import { readStat } from '../../shared/kernel/proc-status.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import { signalTree } from '../../shared/kernel/signal-tree.js';
import { ThawGuard } from '../../shared/kernel/thaw-guard.js';
import type { Logger } from '../../shared/logging/logger.js';
import { ThrottleBase, type ThrottleMethod } from './task-throttle.js';

export const DEFAULT_DUTY_PERIOD_MS = 100;
const GUARD_DISARM_TIMEOUT_MS = 2000;

export class DutyCycleThrottle extends ThrottleBase {
  readonly method: ThrottleMethod = 'duty-cycle';
  private timer: NodeJS.Timeout | undefined;
  /** The tree is stopped by us right now. */
  private stopped = false;
  private everStopped = false;
  /** The percent the running cycle uses (set() changes it from the next phase on). */
  private target = 0;
  private guard: ThawGuard | undefined;

  constructor(
    rootPid: number,
    log: Logger,
    private readonly rootStartTime: number,
    private readonly periodMs: number,
  ) {
    super(rootPid, log);
  }

  protected async apply(percent: number): Promise<void> {
    if (percent === 0) {
      this.halt();
      return;
    }
    const pids = readProcessTree(this.rootPid)?.processes.map((p) => p.hostPid) ?? [this.rootPid];
    if (this.guard) {
      this.guard.update(pids);
    } else {
      const guard = new ThawGuard({ name: 'ferry-throttle-guard', pgid: this.rootPid, pids, keepAlive: false, disarmTimeoutMs: GUARD_DISARM_TIMEOUT_MS });
      await guard.spawned;
      this.guard = guard;
    }
    this.target = percent;
    if (this.timer === undefined) this.step();
  }

  protected async restore(): Promise<void> {
    // Every step runs synchronously on this thread (signalTree is synchronous), so with the timer cleared
    // no step is half done and none can follow.
    this.halt();
    if (this.everStopped && this.sameTask()) signalTree(this.rootPid, 'SIGCONT');
    const guard = this.guard;
    this.guard = undefined;
    if (!guard) return;
    const end = await guard.disarm();
    if (end.answer !== 'disarmed') throw new Error(`throttle guard answered '${end.answer}' (exit ${end.exit})`);
  }

  /** Stops the cycle and leaves the tree running. */
  private halt(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped) {
      this.stopped = false;
      signalTree(this.rootPid, 'SIGCONT');
    }
  }

  /** One phase of the cycle: resume and run (1 - p) of the period, or stop for p of it. */
  private step(): void {
    this.timer = undefined;
    try {
      if (this.stopped) {
        this.stopped = false;
        signalTree(this.rootPid, 'SIGCONT');
        this.schedule((this.periodMs * (100 - this.target)) / 100);
        return;
      }
      // A pid reused by another task must never be stopped: the root is named by pid and start time.
      if (!this.sameTask()) {
        this.log.info('task throttle: the task is gone, duty cycle stops', { rootPid: this.rootPid });
        return;
      }
      this.stopped = true; // before the signal: a throw part-way still resumes in halt()
      this.everStopped = true;
      signalTree(this.rootPid, 'SIGSTOP');
      this.schedule((this.periodMs * this.target) / 100);
    } catch (e) {
      this.collect('duty-cycle step', e);
      this.halt();
    }
  }

  /** The root pid still names the task (not a task that reused the pid). */
  private sameTask(): boolean {
    return readStat(this.rootPid)?.startTime === this.rootStartTime;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => this.step(), ms);
    this.timer.unref();
  }
}
