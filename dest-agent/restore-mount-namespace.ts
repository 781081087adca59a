/**
 * The mount namespace a Restore asks for (proto MountNamespace), checked before the session moves: every
 * external mount must be a plain absolute path (criu takes it as `--external mnt[PATH]:PATH`) that exists
 * here, since criu bind-mounts this host's PATH into the restored namespace.
 */
import { existsSync } from 'node:fs';
import { posix } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { TaskMountNamespace } from '../shared/kernel/task-mount-namespace.js';
import type { MountNamespaceMessage } from '../shared/transport/messages.js';
import { checkListLength, checkText } from './request-bounds.js';

/** Far more mounts than a host has (this one: about 20); bounds the existsSync calls below. */
export const MAX_EXTERNAL_MOUNTS = 512;
/** PATH_MAX. */
const MAX_PATH = 4096;

export function restoreMountNamespace(asked: MountNamespaceMessage | null | undefined): TaskMountNamespace | undefined {
  if (!asked) return undefined;
  const paths = asked.externalMounts ?? [];
  checkListLength('mount_ns.external_mounts', paths.length, MAX_EXTERNAL_MOUNTS, 'restore');
  for (const [i, p] of paths.entries()) {
    checkText(`mount_ns.external_mounts[${i}]`, p, MAX_PATH, 'restore');
    if (!p.startsWith('/') || posix.normalize(p) !== p || (p !== '/' && p.endsWith('/')) || p.includes('\0')) {
      throw new FerryError('REQUEST_INVALID', { side: 'dest', phase: 'restore', detail: `mount_ns.external_mounts[${i}] is not a normalized absolute path` });
    }
  }
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new FerryError('MOUNT_MISSING_ON_DEST', {
      side: 'dest',
      phase: 'restore',
      detail: `${missing.length} of the task's ${paths.length} external mounts have no path here: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`,
    });
  }
  return { externalMounts: [...paths] };
}
