/**
 * The criu arguments of a task's own mount namespace (shared/kernel/task-mount-namespace.ts). Each external
 * mount is keyed by its mount point, and the dest maps that key to the same path of its own (runc keys a
 * container's bind mounts by their destination the same way). Restore needs `--root`: without it, criu 4.2.1
 * first unmounts the copy of its own mounts in the new namespace, and in its default (mount-v2) mode that
 * path hits BUG_ON(!plain_mountpoint) in service_mountpoint() and the restore dies with SIGSEGV. The
 * namespace's root is then the dest's `/`, where the source's was the source's `/`.
 */
import type { TaskMountNamespace } from '../kernel/task-mount-namespace.js';

export function criuMountNamespaceArgs(ns: TaskMountNamespace | undefined, mode: 'dump' | 'restore'): string[] {
  if (!ns) return [];
  const args = mode === 'restore' ? ['--root', '/'] : [];
  for (const path of ns.externalMounts) args.push('--external', `mnt[${path}]:${path}`);
  return args;
}
