/** /proc/PID/mountinfo: one entry per mount of the task's mount namespace, in the kernel's (mount) order. */
import { readFileSync } from 'node:fs';

export interface MountInfo {
  id: number;
  parentId: number;
  /** The superblock's device, "MAJOR:MINOR". */
  dev: string;
  /** The mount's root within its file system (a bind mount's source directory). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The entries of a mountinfo text; lines that do not parse are skipped. */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    // Optional fields (shared:N, master:N) sit between the mount options and " - ".
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [id, parentId, dev, root, mountPoint] = line.slice(0, sep).split(' ');
    const [fsType, source = '', superOptions = ''] = line.slice(sep + 3).split(' ');
    if (id === undefined || parentId === undefined || dev === undefined || root === undefined || mountPoint === undefined || !fsType) continue;
    out.push({ id: Number(id), parentId: Number(parentId), dev, root: unescapeMountField(root), mountPoint: unescapeMountField(mountPoint), fsType, source: unescapeMountField(source), superOptions });
  }
  return out;
}

/** The mounts `pid` sees ('self' for this process); undefined once it is gone. */
export function readMountInfo(pid: number | 'self', procRoot = '/proc'): MountInfo[] | undefined {
  try {
    return parseMountInfo(readFileSync(`${procRoot}/${pid}/mountinfo`, 'utf8'));
  } catch {
    return undefined;
  }
}
