/**
 * A task in vfork(): parent and child share one mm until the child execs or exits, and CRIU refuses two
 * processes with one mm ("Can't make VM id", criu/cr-dump.c, dump_task_kobj_ids: kcmp KCMP_VM; ZDTM vfork00 is
 * crfail). /proc shows no mm identity, but the parent sleeps uninterruptibly (D) in the vfork syscall: its
 * kernel stack names __do_sys_vfork (or kernel_clone under clone(CLONE_VFORK)), and its syscall file the
 * number. Without the check Ferry failed late, FERRY-3006 after the injection timeout.
 */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

/** vfork, clone, clone3 by architecture (arm64 has no vfork: glibc calls clone with CLONE_VFORK). */
const VFORK_SYSCALLS: Record<string, readonly string[]> = { x64: ['58', '56', '435'], arm64: ['220', '435'] };

export function inVfork(t: { state: string; stack: string; syscall: string }, arch: string): boolean {
  if (t.state !== 'D') return false;
  if (/\b__(do|se)_sys_vfork\b|\bwait_for_vfork_done\b/.test(t.stack)) return true;
  // A stack we may not read: a D sleep in vfork/clone is a vfork wait (a plain fork never sleeps in D there).
  return t.stack === '' && (VFORK_SYSCALLS[arch] ?? []).includes(t.syscall);
}

export const vforkCheck: PreflightCheck = {
  name: 'vfork',
  key: 'PREFLIGHT_VFORK',
  overridable: false,
  run({ tree, arch }) {
    const waiting = tree.tasks.flatMap((t) => t.threadsInKernel.filter((th) => inVfork(th, arch)).map((th) => `pid ${t.pid} (${t.name}) thread ${th.tid}`));
    return waiting.length > 0 ? refuse(`${some(waiting)} wait(s) in vfork() for a child that shares its memory`) : ok('no task in vfork()');
  },
};
