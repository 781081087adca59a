/**
 * Holds the tracked processes still for the few milliseconds between reading their soft-dirty bits and clearing
 * them. Without it a page written after its entry was read and before clear_refs would lose its mark and never
 * be sent again (the kernel has no atomic read-and-clear for soft-dirty; CRIU's pre-dump freezes too).
 *
 * SIGSTOP/SIGCONT, like the throttle's duty cycling. A process already stopped (job control, or the throttle) is
 * left as it is and not continued. Synchronous on purpose: no event-loop turn (a throttle timer) runs between
 * the stop and the continue.
 */
import { readdirSync } from 'node:fs';
import { readStat } from '../../../shared/kernel/proc-status.js';

export interface PausedProcesses {
  /** Processes this call stopped (and resume() continues). */
  stopped: number[];
  /** Processes whose threads did not all stop within the bound (the scan went ahead anyway). */
  late: number[];
  /** Time from the first SIGSTOP to every thread stopped (or the bound). */
  stopMs: number;
  resume(): void;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function threadsOf(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

/** True when every thread is stopped, or the process is gone. */
function allStopped(pid: number): boolean {
  for (const tid of threadsOf(pid)) {
    const state = readStat(pid, Number(tid))?.state;
    if (state !== undefined && state !== 'T' && state !== 't' && state !== 'Z' && state !== 'X') return false;
  }
  return true;
}

function signal(pid: number, sig: 'SIGSTOP' | 'SIGCONT'): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false; // exited meanwhile
  }
}

export function pauseProcesses(pids: readonly number[], boundMs = 500): PausedProcesses {
  const t0 = performance.now();
  const stopped: number[] = [];
  for (const pid of pids) if (!allStopped(pid) && signal(pid, 'SIGSTOP')) stopped.push(pid);
  let waiting = stopped.slice();
  while (waiting.length > 0 && performance.now() - t0 < boundMs) {
    waiting = waiting.filter((pid) => !allStopped(pid));
    if (waiting.length > 0) Atomics.wait(sleeper, 0, 0, 1);
  }
  const stopMs = performance.now() - t0;
  let resumed = false;
  return {
    stopped,
    late: waiting,
    stopMs,
    resume(): void {
      if (resumed) return;
      resumed = true;
      for (const pid of stopped) signal(pid, 'SIGCONT');
    },
  };
}
