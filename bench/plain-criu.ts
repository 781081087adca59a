/**
 * The outside baseline: stop-and-copy with plain CRIU, the way an operator would script it.
 *   criu dump --leave-stopped (src netns) -> tar | tcp-pipe over the shaped veth -> criu restore -d (dst netns)
 *   -> kill the stopped original.
 * Downtime is the dump's start to the restore's end: `criu restore` without --leave-stopped resumes the tree
 * itself before it exits. The receiver is started before the clock (an operator would have it waiting).
 */
import { readFile, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TwoHosts } from '../testbed/two-hosts.js';
import type { MemtestHandle } from '../testbed/workloads/memtest.js';
import { startReceiver, runSender } from './link.js';
import { runCommand, tailLines, type CommandOptions } from './proc.js';
import type { MethodOutcome } from './results.js';

export interface PlainCriuContext {
  hosts: TwoHosts;
  criu: string;
  /** build/bench/bench/tcp-pipe.js */
  tcpPipe: string;
  task: MemtestHandle;
  /** Images on both sides and the logs go under here (tmpfs, as Ferry's images do). */
  workDir: string;
  signal: AbortSignal;
  timeoutMs: number;
}

/** Error lines of a CRIU log, without the RLIMIT_NOFILE line every run prints. */
async function criuErrors(log: string): Promise<string> {
  const text = await readFile(log, 'utf8').catch(() => '');
  const lines = text.split('\n').filter((l) => /\bError \(/.test(l) && !/RLIMIT_NOFILE/.test(l));
  return lines.slice(-6).join('\n') || '(no Error lines)';
}

async function runCriu(ctx: PlainCriuContext, netns: string, args: string[], log: string, what: string, opts: CommandOptions): Promise<void> {
  const r = await runCommand(['nsenter', `--net=${netns}`, ctx.criu, ...args, '-o', log], opts);
  ctx.signal.throwIfAborted();
  if (r.code !== 0) {
    throw new Error(`${what} ${r.signal ? `killed by ${r.signal}` : `exited ${r.code}`}; log ${log}:\n${await criuErrors(log)}`);
  }
}

export async function plainCriuStopAndCopy(ctx: PlainCriuContext): Promise<MethodOutcome> {
  const { hosts, task } = ctx;
  const srcDir = join(ctx.workDir, 'src-images');
  const dstDir = join(ctx.workDir, 'dst-images');
  const logs = join(ctx.workDir, 'logs');
  const pidFile = join(ctx.workDir, 'restored.pid');
  await Promise.all([srcDir, dstDir, logs].map((d) => mkdir(d, { recursive: true })));
  await rm(pidFile, { force: true });
  const opts: CommandOptions = { signal: ctx.signal, timeoutMs: ctx.timeoutMs };

  const receiver = await startReceiver(ctx.tcpPipe, hosts.dst.netns, hosts.dst.address, dstDir, opts);
  try {
    const t0 = performance.now();
    await runCriu(ctx, hosts.src.netns, ['dump', '-t', String(task.rootPid), '-D', srcDir, '--leave-stopped'], join(logs, 'dump.log'), 'criu dump', opts);
    const t1 = performance.now();
    const sent = await runSender(ctx.tcpPipe, hosts.src.netns, hosts.dst.address, receiver.port, { dir: srcDir }, opts);
    const received = await receiver.done;
    ctx.signal.throwIfAborted();
    if (sent.code !== 0 || received.code !== 0) {
      throw new Error(`image copy failed: sender exited ${sent.code} (${tailLines(sent.stderr, 3)}), receiver ${received.code} (${tailLines(received.stderr, 3)})`);
    }
    const t2 = performance.now();
    // Not cut short by Ctrl-C: a restore killed midway leaves a copy that finishes restoring on its own, with
    // no pid file to find it by. It ends within its timeout; the pid file then names the copy to kill.
    await runCriu(ctx, hosts.dst.netns, ['restore', '-D', dstDir, '-d', '--pidfile', pidFile], join(logs, 'restore.log'), 'criu restore', { timeoutMs: ctx.timeoutMs });
    const t3 = performance.now();
    const restoredPid = Number((await readFile(pidFile, 'utf8')).trim());
    task.adopt(restoredPid);
    // The stopped original: the copy runs now. (task.stop() waits for it to be gone.)
    process.kill(task.rootPid, 'SIGKILL');
    return {
      downtimeMs: t3 - t0,
      totalMs: t3 - t0,
      bytesSent: received.bytes,
      rounds: 0,
      restoredPid,
      phases: { dump: t1 - t0, transfer: t2 - t1, rebuild: 0, restore: t3 - t2, commit: 0 },
      decision: undefined,
      freezeRule: undefined,
      throttle: undefined,
      detail: { dumpMs: t1 - t0, copyMs: t2 - t1, restoreMs: t3 - t2 },
    };
  } catch (err) {
    receiver.kill();
    // A restore that got as far as the pid file left a copy behind: the task's stop() must take it too.
    const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
    if (pid > 0) task.adopt(pid);
    throw err;
  } finally {
    await receiver.done.catch(() => undefined);
  }
}
