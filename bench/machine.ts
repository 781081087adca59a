/** The machine a benchmark ran on, for the report (read-only probes: uname, /proc, criu --version, git). */
import { readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { REPO_ROOT } from '../testbed/two-hosts.js';
import { runCommand } from './proc.js';
import type { MachineInfo } from './results.js';

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return m[1].trim();
  } catch {
    /* fall back to os.cpus() */
  }
  return cpus()[0]?.model ?? 'unknown';
}

export async function describeMachine(criuPath: string): Promise<MachineInfo> {
  const criu = await runCommand([criuPath, '--version'], { timeoutMs: 10_000 });
  const criuVersion = /Version:\s*(\S+)/.exec(criu.stdout)?.[1] ?? (criu.stdout.trim().split('\n')[0] || 'unknown');
  const head = await runCommand(['git', '-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 10_000 });
  const dirty = await runCommand(['git', '-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 10_000 });
  // FERRY_BENCH_COMMIT names the commit of a tree exported without .git (git archive), where git cannot tell.
  const commit = process.env.FERRY_BENCH_COMMIT ?? (head.code === 0 ? head.stdout.trim() : 'unknown');
  return {
    kernel: release(),
    cpuModel: cpuModel(),
    cores: cpus().length,
    memoryGiB: totalmem() / 2 ** 30,
    criuVersion,
    criuPath,
    nodeVersion: process.version,
    date: new Date().toISOString().slice(0, 10),
    ferryCommit: head.code === 0 && dirty.code === 0 && dirty.stdout.trim() !== '' ? `${commit} (with uncommitted changes)` : commit,
  };
}
