/**
 * A task's own mount namespace (`ferry run --mounts private`), as CRIU must be told about it. CRIU dumps every
 * mount of that namespace and rebuilds it on restore, but a mount the task got from its host (the root fs's
 * binds, /dev, /sys, /run, ...) is the host's, not the task's: it is declared external, so that the dest
 * bind-mounts its own file system at the same path (as runc declares a container's bind mounts). A mount is
 * the host's when this agent's own namespace has it at the same place: same superblock, same root, same
 * mount point. The rest is the task's and CRIU carries it: its /proc (a proc of its own pid namespace,
 * remounted there on restore), a tmpfs it mounted (with its content). The namespace's root mount is never
 * external: it is `criu restore --root`.
 */
import { readlinkSync } from 'node:fs';
import { readMountInfo, type MountInfo } from './mount-info.js';

export interface TaskMountNamespace {
  /** Mount points (absolute, once each, in mount order) bind-mounted from the same path on the dest. */
  externalMounts: string[];
}

/** The task's mount points that are the host's (see the top of this file). */
export function externalMountsOf(task: readonly MountInfo[], host: readonly MountInfo[]): string[] {
  const ids = new Set(task.map((m) => m.id));
  const hostKeys = new Set(host.map(mountKey));
  const out = new Set<string>();
  for (const m of task) {
    const isRoot = !ids.has(m.parentId);
    if (isRoot || m.fsType === 'proc') continue;
    if (hostKeys.has(mountKey(m))) out.add(m.mountPoint);
  }
  return [...out];
}

function mountKey(m: MountInfo): string {
  return `${m.dev}\0${m.root}\0${m.mountPoint}`;
}

function nsLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Undefined when `pid` shares this process's mount namespace (criu, run by this agent, then leaves mounts
 * alone), or is gone. `procRoot`: a fake /proc in tests.
 */
export function readTaskMountNamespace(pid: number, procRoot = '/proc'): TaskMountNamespace | undefined {
  const own = nsLink(`${procRoot}/self/ns/mnt`);
  const theirs = nsLink(`${procRoot}/${pid}/ns/mnt`);
  if (theirs === undefined || theirs === own) return undefined;
  const task = readMountInfo(pid, procRoot);
  const host = readMountInfo('self', procRoot);
  if (task === undefined || host === undefined) return undefined;
  return { externalMounts: externalMountsOf(task, host) };
}
