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
import type { FillWork } from './results.js';

const PERIOD_MS = 500;
/** A pre-copy shorter than this between its first and last sample gives no rate. */
const MIN_SPAN_MS = 400;

export interface Sample {
  report: StatsReport;
  /** Monotonic ms (monoNowMs) when the request was sent and when the report was read. */
  requestedAt: number;
  receivedAt: number;
}

/** Rewritten pages per second between two reports of the same task (the clock is the host's, shared by both
 * network namespaces, and CRIU keeps the counter). */
export function writesPerSec(a: StatsReport, b: StatsReport): number | undefined {
  const ms = b.mono_ms - a.mono_ms;
  return ms > 0 ? ((b.writes - a.writes) * 1000) / ms : undefined;
}

/** CLOCK_MONOTONIC in ms, memtest's `mono_ms` clock (libuv's hrtime is CLOCK_MONOTONIC on Linux). */
export function monoNowMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

export async function sample(task: MemtestHandle, hostPid?: number): Promise<Sample> {
  const requestedAt = monoNowMs();
  const report = await task.stats(hostPid);
  return { report, requestedAt, receivedAt: monoNowMs() };
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

  /** The last sample taken (after stop(): the last before the freeze). */
  last(): Sample | undefined {
    return this.samples.at(-1);
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

/** A fill shorter than this (resume to migrate's return) gives no rate: a few of memtest's ticks at most. */
export const MIN_FILL_SPAN_MS = 50;

/**
 * The writes per second of the task between the resume and `to` (see FillWork in results.ts): the writes since
 * `from` less those estimated between `from` and the freeze at `rateBefore`. Instants are the benchmark's clock
 * (each sample's request): a restored copy's CLOCK_MONOTONIC is not the host's (measured here: 240-320 ms behind
 * after criu restore), so memtest's mono_ms cannot span the original and its copy.
 */
export function fillWork(args: {
  from: Sample;
  freezeMonoMs: number;
  rateBefore: number | undefined;
  resumeMonoMs: number;
  resumeFrom: FillWork['resumeFrom'];
  to: Sample;
}): FillWork {
  const { from, to } = args;
  const gapWrites = Math.max(0, args.freezeMonoMs - from.requestedAt) * ((args.rateBefore ?? 0) / 1000);
  const span = to.requestedAt - args.resumeMonoMs;
  const writes = to.report.writes - from.report.writes - gapWrites;
  return {
    fromWrites: from.report.writes,
    fromMonoMs: from.requestedAt,
    freezeMonoMs: args.freezeMonoMs,
    gapWrites,
    resumeMonoMs: args.resumeMonoMs,
    resumeFrom: args.resumeFrom,
    toWrites: to.report.writes,
    toMonoMs: to.requestedAt,
    copyClockOffsetMs: to.report.mono_ms - to.requestedAt,
    writesPerSec: span >= MIN_FILL_SPAN_MS ? (Math.max(0, writes) * 1000) / span : undefined,
  };
}

/** Writes per second from a sample of the original to one of its copy, on the benchmark's clock (see fillWork). */
export function writesPerSecAcross(a: Sample, b: Sample): number | undefined {
  const ms = b.requestedAt - a.requestedAt;
  return ms > 0 ? ((b.report.writes - a.report.writes) * 1000) / ms : undefined;
}
