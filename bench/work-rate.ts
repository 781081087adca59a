/**
 * The task's own work rate: memtest counts the pages it rewrites (`writes`) and reports them with its
 * CLOCK_MONOTONIC on SIGUSR2. A rate is the difference of two reports over their clock difference.
 *
 * During pre-copy the task is sampled every PERIOD_MS; the sampler is stopped at the freeze decision. A request
 * that finds the task stopped (Ferry's duty-cycle throttle stops it for part of each period; memtest.ts refuses
 * a stopped task at once) is simply tried again at the next period: a throttled task must show in the rate.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { MemtestHandle, StatsReport } from '../testbed/workloads/memtest.js';

const PERIOD_MS = 500;
/** A pre-copy shorter than this between its first and last sample gives no rate. */
const MIN_SPAN_MS = 400;

export interface Sample {
  report: StatsReport;
  /** performance.now() when the request was sent and when the report was read. */
  requestedAt: number;
  receivedAt: number;
}

/** Rewritten pages per second between two reports of the same task (the clock is the host's, shared by both
 * network namespaces, and CRIU keeps the counter). */
export function writesPerSec(a: StatsReport, b: StatsReport): number | undefined {
  const ms = b.mono_ms - a.mono_ms;
  return ms > 0 ? ((b.writes - a.writes) * 1000) / ms : undefined;
}

export async function sample(task: MemtestHandle, hostPid?: number): Promise<Sample> {
  const requestedAt = performance.now();
  const report = await task.stats(hostPid);
  return { report, requestedAt, receivedAt: performance.now() };
}

export class PrecopySampler {
  private readonly samples: Sample[] = [];
  private stopped = false;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(private readonly task: MemtestHandle) {}

  start(): void {
    this.loop ??= this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        this.samples.push(await sample(this.task));
      } catch {
        // Stopped by the throttle (or by the freeze, which stop() is about to end): the next period tries again.
      }
      await sleep(PERIOD_MS, undefined, { signal: this.stopper.signal }).catch(() => undefined);
    }
  }

  /** Stops sampling (waits for a request in flight) and returns the pre-copy rate, if the samples span enough. */
  async stop(): Promise<number | undefined> {
    this.stopped = true;
    this.stopper.abort();
    await this.loop;
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.report.mono_ms - first.report.mono_ms < MIN_SPAN_MS) return undefined;
    return writesPerSec(first.report, last.report);
  }
}
