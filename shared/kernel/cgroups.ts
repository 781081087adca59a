/**
 * Cgroups of a task tree: the cgroup mounts (/proc/self/mountinfo), a task's memberships (/proc/PID/cgroup),
 * and the cpu cgroup a tree has to itself, if any (v2 with the cpu controller enabled, else the v1 cpu
 * hierarchy): every thread of the tree in it, no other process in it or below it, and not the root cgroup.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { readProcText, readStatus } from './proc-status.js';
import type { ProcessTree } from './process-tree.js';
import { parseMountInfo } from './mount-info.js';

export interface CgroupMount {
  version: 1 | 2;
  /** The cgroup shown at the mount point (not '/' when a sub-tree is mounted, as in some containers). */
  root: string;
  mountPoint: string;
  /** v1: the controllers bound to the hierarchy (from the super options); v2: empty. */
  controllers: string[];
}

export interface CgroupMembership {
  hierarchyId: number;
  /** v1: the hierarchy's controllers (and `name=` entries); v2 (id 0): empty. */
  controllers: string[];
  path: string;
}

export interface CpuCgroup {
  version: 1 | 2;
  path: string;
  dir: string;
  /** Where the hierarchy is mounted: the limits of `dir`'s ancestors up to here also apply. */
  mountDir: string;
}

/** The cgroup mounts of a /proc/PID/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const m of parseMountInfo(mountinfo)) {
    if (m.fsType === 'cgroup2') mounts.push({ version: 2, root: m.root, mountPoint: m.mountPoint, controllers: [] });
    else if (m.fsType === 'cgroup') mounts.push({ version: 1, root: m.root, mountPoint: m.mountPoint, controllers: m.superOptions.split(',') });
  }
  return mounts;
}

/** The lines of /proc/PID/cgroup: `ID:CONTROLLERS:PATH` (the path may itself contain ':'). */
export function parseProcCgroup(text: string): CgroupMembership[] {
  const out: CgroupMembership[] = [];
  for (const line of text.split('\n')) {
    const a = line.indexOf(':');
    const b = line.indexOf(':', a + 1);
    if (a < 0 || b < 0) continue;
    out.push({ hierarchyId: Number(line.slice(0, a)), controllers: line.slice(a + 1, b).split(',').filter(Boolean), path: line.slice(b + 1) });
  }
  return out;
}

/** Undefined on any error: a missing controller file, a removed cgroup and EACCES all mean "not usable". */
function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A file of a cgroup directory; undefined when it cannot be read. */
export function readCgroupFile(dir: string, file: string): string | undefined {
  return readText(posix.join(dir, file));
}

/** The directory of cgroup `path` under a mount of its hierarchy; undefined when no mount shows it. */
function cgroupDir(mounts: readonly CgroupMount[], path: string): { dir: string; mountDir: string } | undefined {
  for (const m of mounts) {
    const root = m.root === '/' ? '' : m.root;
    if (root !== '' && path !== root && !path.startsWith(`${root}/`)) continue;
    return { dir: posix.join(m.mountPoint, path.slice(root.length)), mountDir: m.mountPoint };
  }
  return undefined;
}

/** The cpu cgroup of one task under `version`'s hierarchy; undefined when the task is gone or has none. */
function cpuCgroupPath(pid: number, tid: number | undefined, version: 1 | 2): string | undefined {
  const text = readProcText(tid === undefined ? `/proc/${pid}/cgroup` : `/proc/${pid}/task/${tid}/cgroup`);
  if (text === undefined) return undefined;
  const lines = parseProcCgroup(text);
  const line = version === 2 ? lines.find((l) => l.hierarchyId === 0) : lines.find((l) => l.hierarchyId !== 0 && l.controllers.includes('cpu'));
  return line?.path;
}

/** The cpu cgroup of the root task: v2 when the cpu controller is enabled there, else the v1 cpu hierarchy. */
function rootCpuCgroup(rootPid: number, mounts: readonly CgroupMount[]): CpuCgroup | string {
  const v2Path = cpuCgroupPath(rootPid, undefined, 2);
  const v2 = v2Path === undefined ? undefined : cgroupDir(mounts.filter((m) => m.version === 2), v2Path);
  if (v2Path !== undefined && v2) {
    const controllers = readCgroupFile(v2.dir, 'cgroup.controllers')?.trim().split(/\s+/) ?? [];
    if (controllers.includes('cpu')) return { version: 2, path: v2Path, ...v2 };
  }
  const v1Path = cpuCgroupPath(rootPid, undefined, 1);
  const v1 = v1Path === undefined ? undefined : cgroupDir(mounts.filter((m) => m.version === 1 && m.controllers.includes('cpu')), v1Path);
  if (v1Path !== undefined && v1) return { version: 1, path: v1Path, ...v1 };
  return 'no cpu controller: neither cgroup v2 with cpu enabled nor a mounted v1 cpu hierarchy';
}

function numericLines(text: string | undefined): number[] {
  return (text ?? '').split('\n').filter((l) => /^\d+$/.test(l.trim())).map(Number);
}

/** Whether `pid` descends from `rootPid` (a task forked after the tree was read). */
function descendsFrom(pid: number, rootPid: number): boolean {
  let p = pid;
  for (let depth = 0; depth < 256 && p > 1; depth++) {
    if (p === rootPid) return true;
    const status = readStatus(p);
    if (!status) return false;
    p = status.ppid;
  }
  return false;
}

/** A cgroup below `dir` that holds processes (a limit on `dir` would apply to them too). */
function populatedDescendant(dir: string): string | undefined {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const sub = posix.join(dir, e.name);
    if (numericLines(readCgroupFile(sub, 'cgroup.procs')).length > 0) return sub;
    const deeper = populatedDescendant(sub);
    if (deeper !== undefined) return deeper;
  }
  return undefined;
}

/** The tree's own cpu cgroup, or the reason why it has none. */
export function ownCpuCgroup(tree: ProcessTree, rootPid: number): CpuCgroup | string {
  const mountinfo = readText('/proc/self/mountinfo');
  if (mountinfo === undefined) return 'cannot read /proc/self/mountinfo';
  const cg = rootCpuCgroup(rootPid, parseCgroupMounts(mountinfo));
  if (typeof cg === 'string') return cg;
  const where = `cpu cgroup ${cg.path} (v${cg.version})`;
  if (cg.path === '/') return `the task is in the root cpu cgroup (v${cg.version})`;
  for (const proc of tree.processes) {
    for (const t of proc.threads) {
      const path = cpuCgroupPath(proc.hostPid, t.hostTid, cg.version);
      // A thread that exited meanwhile has no cgroup any more; every other one must share the root's.
      if (path !== undefined && path !== cg.path) return `thread ${t.hostTid} of the tree is in ${path}, not in ${where}`;
    }
  }
  if (cg.version === 2) {
    const type = readCgroupFile(cg.dir, 'cgroup.type')?.trim();
    if (type !== undefined && type !== 'domain') return `${where} is of type ${type}`;
  }
  const inTree = new Set(tree.processes.map((p) => p.hostPid));
  const procsText = readCgroupFile(cg.dir, 'cgroup.procs');
  if (procsText === undefined) return `cannot read ${cg.dir}/cgroup.procs`;
  const foreign = numericLines(procsText).filter((pid) => !inTree.has(pid) && !descendsFrom(pid, rootPid));
  if (foreign.length > 0) return `${where} also holds ${foreign.length} process(es) outside the task tree (e.g. ${foreign[0]})`;
  const below = populatedDescendant(cg.dir);
  if (below !== undefined) return `${where} has a populated child cgroup ${below}`;
  return cg;
}
