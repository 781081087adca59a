/**
 * The CPU throttle of auto-converge (QEMU's auto-converge, for a process tree): when pre-copy cannot catch up,
 * take a share of the task's CPU away so that it dirties memory more slowly; released before the freeze.
 * Two methods implement it (cgroup-throttle.ts, duty-cycle-throttle.ts); choose-throttle.ts picks one.
 *
 * release() must be awaited before `criu dump`: once it resolves the throttle sends no signal and writes no
 * cgroup file any more, so nothing can race CRIU's own ptrace stop.
 */
import type { Logger } from '../../shared/logging/logger.js';

export type ThrottleMethod = 'cgroup-v2' | 'cgroup-v1' | 'duty-cycle';

export interface TaskThrottle {
  readonly method: ThrottleMethod;
  /** Share of CPU taken away now, 0 = none. */
  readonly percent: number;
  /** Errors met by release() and by the duty-cycle timer, which never throw them (each is also logged). */
  readonly errors: readonly Error[];
  /** 0..99; idempotent. Rejects once release() was called. */
  set(percent: number): Promise<void>;
  /** Back exactly to how the task was; idempotent, never throws. After it resolves, the task is left alone. */
  release(): Promise<void>;
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** What both methods share: validation, one operation at a time, release once, errors collected. */
export abstract class ThrottleBase implements TaskThrottle {
  abstract readonly method: ThrottleMethod;
  private current = 0;
  private readonly collected: Error[] = [];
  private tail: Promise<void> = Promise.resolve();
  private releasing: Promise<void> | undefined;

  constructor(
    protected readonly rootPid: number,
    protected readonly log: Logger,
  ) {}

  get percent(): number {
    return this.current;
  }

  get errors(): readonly Error[] {
    return this.collected;
  }

  set(percent: number): Promise<void> {
    if (!Number.isFinite(percent) || percent < 0 || percent > 99) {
      return Promise.reject(new RangeError(`throttle percent must be within 0..99, not ${percent}`));
    }
    return this.serial(async () => {
      if (this.releasing) throw new Error('the task throttle was released');
      if (percent === this.current) return;
      await this.apply(percent);
      this.log.debug('task throttle set', { method: this.method, rootPid: this.rootPid, percent });
      this.current = percent;
    });
  }

  release(): Promise<void> {
    // Queued behind a set() in flight, so that set() cannot undo the release.
    this.releasing ??= this.serial(async () => {
      try {
        await this.restore();
      } catch (e) {
        this.collect('release', e);
      }
      this.current = 0;
      this.log.debug('task throttle released', { method: this.method, rootPid: this.rootPid, errors: this.collected.length });
    });
    return this.releasing;
  }

  /** Takes `percent` (0 = none) of the CPU away. */
  protected abstract apply(percent: number): Promise<void>;
  /** Undoes every change; may throw (collected). */
  protected abstract restore(): Promise<void>;

  protected collect(what: string, e: unknown): void {
    const err = asError(e);
    this.collected.push(err);
    this.log.warn(`task throttle: ${what} failed`, { method: this.method, rootPid: this.rootPid, err });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
