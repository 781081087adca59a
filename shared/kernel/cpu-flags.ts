/**
 * The CPU feature flags of this host, as /proc/cpuinfo gives them ("flags" on x86, "Features" on arm64): a task
 * that probed a feature at start (glibc's ifuncs, a JIT) uses it ever after, so the dest must offer every flag
 * the source has (a task that used AVX-512 dies with SIGILL on a dest without it: podman issue 17496).
 */
import { readProcText } from './proc-status.js';

/** More flags than any CPU prints today (x86 prints about 150): the wire's bound (dest-agent/request-bounds.ts). */
export const MAX_CPU_FLAGS = 512;
export const MAX_CPU_FLAG_LENGTH = 64;

/**
 * The flags of the first processor listed, sorted and deduplicated; [] when the kernel prints none (then the
 * check cannot compare and says so). Every processor of a host lists the same flags in practice.
 */
export function parseCpuFlags(cpuinfo: string): string[] {
  const m = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(cpuinfo);
  if (!m) return [];
  const flags = new Set(m[1]!.split(/\s+/).filter((f) => f !== '' && f.length <= MAX_CPU_FLAG_LENGTH));
  return [...flags].sort().slice(0, MAX_CPU_FLAGS);
}

/**
 * This host's flags. FERRY_TEST_HIDE_CPU_FLAGS (comma-separated) leaves those out of what this host reports;
 * it exists so that a test can start a dest agent that seems to lack a feature, and is not meant for operators.
 */
export function hostCpuFlags(procRoot = '/proc'): string[] {
  const flags = parseCpuFlags(readProcText(`${procRoot}/cpuinfo`) ?? '');
  const hidden = new Set((process.env.FERRY_TEST_HIDE_CPU_FLAGS ?? '').split(',').map((f) => f.trim()));
  return flags.filter((f) => !hidden.has(f));
}
