/**
 * What the fault matrix and the soak read about a process from /proc: its state letter, its start time (so a
 * recycled pid is never mistaken for it), stopping and continuing it with a bounded wait until the kernel
 * shows the change, and what it holds (resident memory, open fds, threads).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { waitFor } from './wait-for.js';

/** The State letter of /proc/PID/status (R, S, D, T, t, Z, ...), or undefined when the pid does not exist. */
export function readPidState(hostPid: number): string | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${hostPid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  return /^State:\s+(\S)/m.exec(status)?.[1];
}

/** Field 22 of /proc/PID/stat (clock ticks after boot), or undefined when the pid does not exist. */
export function processStartTime(hostPid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${hostPid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: count fields after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function liveState(hostPid: number, what: string): string {
  const state = readPidState(hostPid);
  if (state === undefined || state === 'Z') throw new Error(`pid ${hostPid} is gone while waiting for it to be ${what}`);
  return state;
}

/** Waits (bounded) until /proc shows pid stopped (T), e.g. after a FERRY_FAULT `stop` action. Throws if it ends first. */
export async function waitUntilStopped(hostPid: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => liveState(hostPid, 'stopped') === 'T', timeoutMs, `pid ${hostPid} to be stopped (state T)`);
}

/** Waits (bounded) until /proc shows pid not stopped (anything but T). Throws if it ends first. */
export async function waitUntilNotStopped(hostPid: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => liveState(hostPid, 'continued') !== 'T', timeoutMs, () => `pid ${hostPid} to leave state T (now ${readPidState(hostPid)})`);
}

function send(hostPid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(hostPid, sig);
  } catch (err) {
    throw new Error(`cannot send ${sig} to pid ${hostPid}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
}

/** SIGSTOP (a hung peer), then waits until the kernel shows it stopped. */
export async function stopProcess(hostPid: number, timeoutMs?: number): Promise<void> {
  send(hostPid, 'SIGSTOP');
  await waitUntilStopped(hostPid, timeoutMs);
}

/** SIGCONT, then waits until it is no longer stopped. */
export async function continueProcess(hostPid: number, timeoutMs?: number): Promise<void> {
  send(hostPid, 'SIGCONT');
  await waitUntilNotStopped(hostPid, timeoutMs);
}

export interface ProcessResources {
  /** VmRSS of /proc/PID/status. */
  rssBytes: number;
  /** Entries of /proc/PID/fd. */
  fds: number;
  /** Threads: of /proc/PID/status. */
  threads: number;
}

/** What pid holds now; throws when it is gone. */
export function processResources(hostPid: number): ProcessResources {
  const status = readFileSync(`/proc/${hostPid}/status`, 'utf8');
  const field = (name: string): number => {
    const v = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1];
    if (v === undefined) throw new Error(`no ${name} in /proc/${hostPid}/status`);
    return Number(v);
  };
  return { rssBytes: field('VmRSS') * 1024, fds: readdirSync(`/proc/${hostPid}/fd`).length, threads: field('Threads') };
}
