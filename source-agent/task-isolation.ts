/**
 * The namespaces `ferry run` gives a task beyond its pid namespace, and the launcher command that makes them.
 *
 * `ipc: 'private'`: a new IPC namespace. CRIU dumps and restores a task's own IPC namespace whole (SysV shared
 * memory, message queues, semaphores); it refuses SysV shared memory that lives in the host's.
 *
 * `mounts: 'private'`: a new mount namespace, propagation private (nothing the host mounts later shows up in
 * the task, nothing the task mounts leaks out), with a proc of the task's own pid namespace at /proc (so
 * /proc/self and /proc/1 are the task's). It starts as a copy of the host's mounts; two kinds of mount are
 * taken out before the command runs, since CRIU cannot carry them: nsfs binds (`ip netns add` names under
 * /run/netns, which pin other hosts' namespaces) and the host's procfs, detached whole with its submounts. The
 * stdio files are opened inside the new namespace: a file opened before the unshare sits on a mount of the
 * host's namespace, which CRIU cannot find in the task's ("Can't lookup mount=N for fd=0 path=/dev/null").
 * The rest are the host's mounts, which the source agent declares external at the dump
 * (shared/kernel/task-mount-namespace.ts).
 */
export type Isolation = 'host' | 'private';

export interface TaskIsolation {
  ipc: Isolation;
  mounts: Isolation;
}

export const HOST_ISOLATION: TaskIsolation = { ipc: 'host', mounts: 'host' };

export function isolationValue(v: string | undefined): Isolation | undefined {
  return v === undefined ? 'host' : v === 'host' || v === 'private' ? v : undefined;
}

/**
 * Run by sh as pid 1 of the new namespaces: $1 and $2 are the stdout and stderr files, then the command.
 * mountinfo is read whole before any umount (the text changes under a reader), and its octal escapes
 * (\\040 for a space) are undone by printf %b. The task becomes a session leader last, by setsid's exec: a
 * caller that sees the task's session equal its pid knows the setup is over.
 */
const MOUNT_SETUP = [
  'set -e',
  'out=$1 err=$2',
  'shift 2',
  'exec </dev/null >>"$out" 2>>"$err"',
  'mounts=$(cat /proc/self/mountinfo)',
  'printf "%s\\n" "$mounts" | while read -r _ _ _ _ mp rest; do',
  '  case "$rest" in *" - nsfs "*) umount -l "$(printf "%b" "$mp")" ;; esac',
  'done',
  'umount -l /proc',
  'mount -t proc -o nosuid,nodev,noexec proc /proc',
  'exec setsid "$@"',
].join('\n');

/**
 * The command (argv) that starts `command` with this isolation, as pid 1 of a new pid namespace and session
 * leader. Spawned with the stdio files as fds 1 and 2 in every case: with private mounts the setup reopens
 * them inside before the command runs, and until then unshare's and the setup's own errors land there.
 */
export function launcher(iso: TaskIsolation, command: string, args: readonly string[], stdout: string, stderr: string): string[] {
  const unshare = ['unshare', '--pid', '--fork', ...(iso.ipc === 'private' ? ['--ipc'] : [])];
  if (iso.mounts === 'host') return [...unshare, 'setsid', command, ...args];
  return [...unshare, '--mount', '--propagation', 'private', '--', 'sh', '-c', MOUNT_SETUP, 'ferry-run', stdout, stderr, command, ...args];
}
