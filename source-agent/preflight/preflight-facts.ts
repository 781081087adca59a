/**
 * What the preflight's checks look at, read from /proc (`procRoot`: a fake /proc in tests) without touching
 * the task: for each process of the tree its state, ids, mappings, fds, sockets and namespaces; for this
 * agent its capabilities, ids and namespaces. The checks (one per file beside this one) are pure functions
 * of these facts and of the two PeerInfos.
 */
import { readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { parseMaps, type Vma } from '../../shared/kernel/proc-maps.js';
import { parseNetSockets, SOCKET_TABLES, type NetSocket } from '../../shared/kernel/proc-net-sockets.js';
import { readProcText } from '../../shared/kernel/proc-status.js';
import { readTaskCriuNeeds, type TaskCriuNeeds } from '../../shared/kernel/task-criu-needs.js';
import { parseTaskIds, type IdQuad } from '../../shared/kernel/task-credentials.js';
import { readTaskMountNamespace } from '../../shared/kernel/task-mount-namespace.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { readTaskNetwork } from '../../shared/kernel/read-task-network.js';
import type { TaskNetwork } from '../../shared/kernel/task-network.js';

/** The namespace kinds of /proc/PID/ns that an nsfs handle can name. */
export const NAMESPACE_KINDS = ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'time', 'user', 'uts'] as const;

export interface DeviceMapping {
  /** The area's start, hex. */
  start: string;
  path: string;
  /** Major and minor of the character device mapped (stat of /proc/PID/map_files/...). */
  rdev: [number, number];
}

export interface HugeArea {
  start: string;
  path: string;
  kernelPageKb: number;
}

export interface TaskFacts {
  pid: number;
  name: string;
  /** One letter of /proc/PID/status's State. */
  state: string;
  threads: number;
  uids: IdQuad;
  gids: IdQuad;
  maps: Vma[];
  /** Areas whose KernelPageSize exceeds the base page size (smaps). */
  hugeAreas: HugeArea[];
  /** Areas backed by a character device (a GPU's /dev/dri/renderD128, /dev/zero, ...). */
  deviceMappings: DeviceMapping[];
  /**
   * readlink of every fd: "socket:[123]", "anon_inode:[io_uring]", "net:[4026531840]", a path. `nsInode`: the
   * path is a namespace file (nsfs) with that inode, e.g. an `ip netns` handle opened as /run/netns/NAME: the
   * kernel names an nsfs file by its path when it is bind-mounted, by "net:[...]" only when it is not.
   */
  fds: { fd: number; target: string; nsInode?: number }[];
  /** The sockets among the fds, with their local addresses (from the task's own netns tables). */
  sockets: NetSocket[];
  /** readlink of /proc/PID/ns/KIND, e.g. "net:[4026531840]"; absent when unreadable. */
  ns: Partial<Record<(typeof NAMESPACE_KINDS)[number], string>>;
  /** /proc/PID/task/TID/stack of each thread ('' when unreadable) with the first field of its syscall file. */
  threadsInKernel: { tid: number; state: string; stack: string; syscall: string }[];
}

export interface AgentFacts {
  /** CapEff of this process. */
  capEff: bigint;
  uid: number;
  gid: number;
  ns: TaskFacts['ns'];
  /** Rows of /proc/sysvipc/{msg,sem}: what the agent's IPC namespace holds (not attributable to a task). */
  sysvMessageQueues: number;
  sysvSemaphores: number;
}

export interface TreeFacts {
  tasks: TaskFacts[];
  criuNeeds: TaskCriuNeeds;
  /**
   * The mount points the dump would declare external (task-mount-namespace.ts): undefined when the root task
   * shares this agent's mount namespace.
   */
  externalMounts: string[] | undefined;
  /** The root task's own network identity (read-task-network.ts); absent when it shares this agent's netns. */
  taskNetwork?: TaskNetwork | undefined;
  /** Why the root task's own network namespace cannot be moved (TASK_NETWORK_UNSUPPORTED's detail). */
  taskNetworkProblem?: string | undefined;
}

function list(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return []; // the task or the fd went away meanwhile
  }
}

function link(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function nsLinks(dir: string): TaskFacts['ns'] {
  const ns: TaskFacts['ns'] = {};
  for (const kind of NAMESPACE_KINDS) {
    const target = link(join(dir, 'ns', kind));
    if (target !== undefined) ns[kind] = target;
  }
  return ns;
}

/** The areas of an smaps text whose KernelPageSize is above the base page (4 kB on x86_64, 64 kB on some arm64). */
export function parseHugeAreas(smaps: string, basePageKb = PAGE_SIZE / 1024): HugeArea[] {
  const out: HugeArea[] = [];
  let current: { start: string; path: string } | undefined;
  for (const line of smaps.split('\n')) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ \S{4} \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      current = { start: head[1]!, path: head[2]! };
      continue;
    }
    const size = /^KernelPageSize:\s+(\d+) kB$/.exec(line);
    if (size && current && Number(size[1]) > basePageKb) out.push({ ...current, kernelPageKb: Number(size[1]) });
  }
  return out;
}

function deviceMappings(dir: string, smapsText: string): DeviceMapping[] {
  const out: DeviceMapping[] = [];
  // map_files names an area by its exact start-end in hex; smaps (like maps) gives them, Vma keeps pages only.
  for (const line of smapsText.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S{4} \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (!m || m[3] === '0' || !m[4]!.startsWith('/')) continue;
    let st;
    try {
      st = statSync(join(dir, 'map_files', `${m[1]}-${m[2]}`));
    } catch {
      continue; // gone, or no map_files (it needs CAP_SYS_ADMIN): CRIU would see it, but so would the freeze
    }
    if (st.isCharacterDevice()) out.push({ start: m[1]!, path: m[4]!, rdev: [Math.floor(st.rdev / 256) & 0xfff, (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)] });
  }
  return out;
}

/** st_dev of nsfs (the file system of /proc/self/ns/*), or undefined when that is unreadable (a fake /proc). */
function nsfsDevice(procRoot: string): number | undefined {
  try {
    return statSync(join(procRoot, 'self', 'ns', 'net')).dev;
  } catch {
    return undefined;
  }
}

/** The inode of the namespace an fd onto a path is, or undefined when that path is no namespace file. */
function nsInodeOf(fdPath: string, target: string, nsfsDev: number | undefined): number | undefined {
  if (nsfsDev === undefined || !target.startsWith('/')) return undefined;
  try {
    const st = statSync(fdPath);
    return st.dev === nsfsDev ? st.ino : undefined;
  } catch {
    return undefined; // closed meanwhile
  }
}

function readTask(procRoot: string, pid: number, nsfsDev: number | undefined): TaskFacts | undefined {
  const dir = join(procRoot, String(pid));
  const status = readProcText(join(dir, 'status'));
  if (status === undefined) return undefined;
  const ids = parseTaskIds(status);
  const field = (key: string): string => new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
  const smaps = readProcText(join(dir, 'smaps')) ?? '';
  const maps = parseMaps(readProcText(join(dir, 'maps')) ?? '');
  const fds: TaskFacts['fds'] = [];
  for (const fd of list(join(dir, 'fd'))) {
    const target = link(join(dir, 'fd', fd));
    if (target === undefined) continue;
    const nsInode = nsInodeOf(join(dir, 'fd', fd), target, nsfsDev);
    fds.push({ fd: Number(fd), target, ...(nsInode !== undefined && { nsInode }) });
  }
  const inodes = new Set(fds.map((f) => /^socket:\[(\d+)\]$/.exec(f.target)?.[1]).filter((i) => i !== undefined).map(Number));
  const sockets = inodes.size === 0 ? [] : SOCKET_TABLES.flatMap((t) => parseNetSockets(t, readProcText(join(dir, 'net', t)) ?? '')).filter((s) => inodes.has(s.inode));
  const threadsInKernel = list(join(dir, 'task')).map((tid) => {
    const tdir = join(dir, 'task', tid);
    const tstatus = readProcText(join(tdir, 'status')) ?? '';
    return {
      tid: Number(tid),
      state: /^State:\s*(\S)/m.exec(tstatus)?.[1] ?? '',
      stack: safeRead(join(tdir, 'stack')),
      syscall: safeRead(join(tdir, 'syscall')).split(' ')[0]!.trim(),
    };
  });
  return {
    pid,
    name: field('Name'),
    state: field('State').slice(0, 1),
    threads: Number(field('Threads')) || 1,
    ...ids,
    maps,
    hugeAreas: parseHugeAreas(smaps),
    deviceMappings: deviceMappings(dir, smaps),
    fds,
    sockets,
    ns: nsLinks(dir),
    threadsInKernel,
  };
}

/** A file that may be unreadable (stack needs CAP_SYS_ADMIN) or gone: ''. */
function safeRead(path: string): string {
  try {
    return readProcText(path) ?? '';
  } catch {
    return '';
  }
}

/** The facts of the tree's processes (host pids, the root first); a process gone meanwhile is left out. */
export function readTreeFacts(pids: readonly number[], procRoot = '/proc'): TreeFacts {
  const nsfsDev = nsfsDevice(procRoot);
  const tasks = pids.map((pid) => readTask(procRoot, pid, nsfsDev)).filter((t) => t !== undefined);
  const mountNs = pids[0] === undefined ? undefined : readTaskMountNamespace(pids[0], procRoot);
  return { tasks, criuNeeds: readTaskCriuNeeds(pids, procRoot), externalMounts: mountNs?.externalMounts, ...taskNetworkFacts(pids[0], procRoot) };
}

/** The root's network identity, or why it cannot move (a refusal of the task-network check, not a throw). */
function taskNetworkFacts(root: number | undefined, procRoot: string): Pick<TreeFacts, 'taskNetwork' | 'taskNetworkProblem'> {
  if (root === undefined) return {};
  try {
    return { taskNetwork: readTaskNetwork(root, procRoot) };
  } catch (e) {
    if (e instanceof FerryError) return { taskNetworkProblem: e.detail ?? e.message };
    return { taskNetworkProblem: `its network namespace could not be read: ${(e as Error).message}` };
  }
}

function rows(text: string | undefined): number {
  return Math.max(0, (text ?? '').split('\n').filter((l) => l.trim() !== '').length - 1);
}

/** This process's facts: `self` is its /proc entry (procRoot/self). */
export function readAgentFacts(procRoot = '/proc'): AgentFacts {
  const status = readProcText(join(procRoot, 'self', 'status')) ?? '';
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  const ids = parseTaskIds(status);
  return {
    capEff: capEff ? BigInt(`0x${capEff}`) : 0n,
    uid: ids.uids[0],
    gid: ids.gids[0],
    ns: nsLinks(join(procRoot, 'self')),
    sysvMessageQueues: rows(readProcText(join(procRoot, 'sysvipc', 'msg'))),
    sysvSemaphores: rows(readProcText(join(procRoot, 'sysvipc', 'sem'))),
  };
}

/** Everything the checks read of this host, at once. */
export function readPreflightFacts(pids: readonly number[], procRoot = '/proc'): { tree: TreeFacts; agent: AgentFacts } {
  return { tree: readTreeFacts(pids, procRoot), agent: readAgentFacts(procRoot) };
}
