/**
 * Named network namespaces of the testbed (netns-hosts.ts, l2-segment.ts): made with `ip netns add`, remembered
 * until deleted so that a run ending without its afterAll still removes them at exit, and swept by name when a
 * run's process is gone (the pid is part of every name). Also the `ip` runner and the TCP reach probe they share.
 */
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { THIS_NETNS } from '../shared/kernel/netns-socket.js';
import { setns } from '../shared/native/libc.js';

const execFileAsync = promisify(execFile);

export const NETNS_DIR = '/run/netns';
const CLONE_NEWNET = 0x40000000;

const live = new Set<string>();

// Last resort for a run that ends without its afterAll (an exception in a hook, a worker shut down early).
process.once('exit', () => {
  for (const name of live) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
});

/** Runs a program (bounded: 10 s); a failure quotes its stderr. */
export async function runTool(program: string, args: string[]): Promise<string> {
  try {
    return (await execFileAsync(program, args, { timeout: 10_000 })).stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim() ?? '';
    throw new Error(`${program} ${args.join(' ')} failed: ${stderr || String(err)}`, { cause: err });
  }
}

export const ip = (args: string[]): Promise<string> => runTool('ip', args);

/** `ip netns add NAME`, remembered for the exit sweep. */
export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
  live.add(name);
}

/** `ip netns del NAME` when it exists. */
export async function deleteNetns(name: string): Promise<void> {
  if (existsSync(join(NETNS_DIR, name))) await ip(['netns', 'del', name]);
  live.delete(name);
}

/** Deletes the namespaces whose name `pattern` matches with group 1 a pid that is gone (a run killed before it
 * could clean up). */
export function sweepStaleNetns(pattern: RegExp): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return;
  }
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m || existsSync(`/proc/${m[1]}`)) continue;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* another run swept it first */
    }
  }
}

/** Port 1 (tcpmux): nothing of ours listens there, so a reachable peer answers the SYN with a RST. */
export const CLOSED_PORT = 1;

/**
 * Whether a TCP connect from the namespace `from` to ADDRESS:PORT gets an answer (refused, or accepted should
 * something listen). Unreachable: ENETUNREACH (no route), or no answer within `timeoutMs`.
 */
export async function tcpAnswers(from: string, address: string, port = CLOSED_PORT, timeoutMs = 1_000): Promise<boolean> {
  try {
    await execFileAsync('nsenter', [`--net=${from}`, 'bash', '-c', `exec 3<>/dev/tcp/${address}/${port}`], { timeout: timeoutMs });
    return true;
  } catch (err) {
    return /refused/i.test((err as { stderr?: string }).stderr ?? '');
  }
}

/**
 * Puts this process's main thread into the network namespace `netns` until the returned function puts it back:
 * a test that acts as an agent of a testbed host (everything it spawns starts there too, every socket it makes
 * is made there). Synchronous both ways; call the undo in an afterAll.
 */
export function enterNetns(netns: string): () => void {
  const back = openSync(THIS_NETNS, 'r');
  const into = openSync(netns, 'r');
  try {
    setns(into, CLONE_NEWNET);
  } catch (e) {
    closeSync(back);
    throw e;
  } finally {
    closeSync(into);
  }
  return () => {
    setns(back, CLONE_NEWNET);
    closeSync(back);
  };
}
