/**
 * The freeze lease: a thaw guard that resumes the frozen tree if the agent goes silent (crash, kill -9, Ctrl-C
 * that kills the whole group) or the deadline passes. The agent disarms it right before committing; the guard
 * answers "disarmed" only if it has not fired, so exactly one of them decides the fate of the original.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { ThawGuard } from '../shared/kernel/thaw-guard.js';

export class FreezeLease {
  private readonly guard: ThawGuard;
  private settled = false;

  /** Arms the lease for the tree whose process group is `pgid` (and these pids, for other groups). */
  constructor(deadlineMs: number, pgid: number, pids: number[]) {
    // Kept alive: while the lease is armed the agent has a reason to live; disarm() or release() ends it.
    this.guard = new ThawGuard({ name: 'ferry-freeze-lease', pgid, pids, deadlineMs, keepAlive: true });
  }

  /** The dump's criu: if the guard fires while it runs, it lets criu finish first, then thaws. */
  waitForDump(criuPid: number): void {
    if (!this.settled) this.guard.waitFor(criuPid);
  }

  /** A command the guard runs before it thaws (the undo of a --tcp-established dump). */
  runBeforeThaw(argv: readonly string[]): void {
    if (!this.settled) this.guard.runBeforeThaw(argv);
  }

  /**
   * Takes the decision back from the guard. Resolves when the guard confirms it will never thaw; throws
   * FREEZE_LEASE_EXPIRED if it already did.
   */
  async disarm(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    const { answer } = await this.guard.disarm();
    if (answer !== 'disarmed') {
      throw new FerryError('FREEZE_LEASE_EXPIRED', { phase: 'commit', side: 'source', sourceState: 'running', detail: `freeze guard: ${answer}` });
    }
  }

  /**
   * Rollback: let the guard thaw now (it is what it does when its input closes). The rollback has run the undo
   * of the dump itself (the step above the thaw): the guard's copy of it is dropped first.
   */
  async release(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.guard.runBeforeThaw([]);
    await this.guard.fire();
  }
}
