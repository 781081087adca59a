/**
 * The plan of `ferry install-service`: each file and directory of a ServiceLayout compared with what is under
 * the root, as one action. The whole plan is made (and any refusal raised) before anything is written, so a
 * refused install touches nothing; files are written to a temporary name and renamed into place.
 */
import { chmodSync, closeSync, constants, fchmodSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { isUnedited } from './file-stamp.js';
import type { ServiceLayout } from './service-files.js';

export type InstallAction =
  | { kind: 'mkdir' | 'chmod'; path: string; mode: number }
  | { kind: 'create' | 'update' | 'replace'; path: string; mode: number; content: string }
  | { kind: 'same'; path: string }
  /** An edited environment file: the operator's, left as it is. */
  | { kind: 'keep'; path: string }
  /** An edited unit: refused without --force. */
  | { kind: 'refuse'; path: string };

function stat(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function conflict(path: string, what: string): FerryError {
  return new FerryError('SERVICE_PATH_CONFLICT', { detail: `${path} should be ${what}` });
}

/** The actions that make `layout` true under `root`; `force` replaces edited files. */
export function planInstall(layout: ServiceLayout, root: string, force: boolean): InstallAction[] {
  const actions: InstallAction[] = [];
  for (const d of layout.directories) {
    const path = join(root, d.path);
    const st = stat(path);
    if (!st) actions.push({ kind: 'mkdir', path, mode: d.mode });
    else if (!st.isDirectory()) throw conflict(path, 'a directory');
    else if (d.own && (st.mode & 0o777 & ~d.mode) !== 0) actions.push({ kind: 'chmod', path, mode: d.mode });
    else actions.push({ kind: 'same', path });
  }
  for (const f of layout.files) {
    const path = join(root, f.path);
    const st = stat(path);
    if (!st) {
      actions.push({ kind: 'create', path, mode: f.mode, content: f.content });
      continue;
    }
    if (!st.isFile()) throw conflict(path, 'a regular file');
    const now = readFileSync(path, 'utf8');
    if (now === f.content) actions.push({ kind: 'same', path });
    else if (isUnedited(now)) actions.push({ kind: 'update', path, mode: f.mode, content: f.content });
    else if (force && f.whenEdited !== 'always-keep') actions.push({ kind: 'replace', path, mode: f.mode, content: f.content });
    else actions.push({ kind: f.whenEdited === 'refuse' ? 'refuse' : 'keep', path });
  }
  return actions;
}

/** The refusal of a plan with edited units, or undefined. */
export function planRefusal(actions: readonly InstallAction[]): FerryError | undefined {
  const refused = actions.filter((a) => a.kind === 'refuse').map((a) => a.path);
  if (refused.length === 0) return undefined;
  return new FerryError('SERVICE_FILE_EDITED', { detail: `edited since install-service wrote them: ${refused.join(', ')}` });
}

/** Carries out a plan (refusal-free: check planRefusal first). */
export function applyInstall(actions: readonly InstallAction[]): void {
  for (const a of actions) {
    switch (a.kind) {
      case 'mkdir':
        mkdirSync(a.path, { recursive: true, mode: a.mode });
        chmodSync(a.path, a.mode); // mkdir's mode is masked by the umask
        break;
      case 'chmod':
        chmodSync(a.path, a.mode);
        break;
      case 'create':
      case 'update':
      case 'replace':
        writeAtomically(a.path, a.content, a.mode);
        break;
      case 'same':
      case 'keep':
      case 'refuse':
        break;
    }
  }
}

/**
 * Written to a fresh temporary name, then renamed into place. The temporary file is made with O_EXCL|O_NOFOLLOW
 * after any stale one is removed, and its mode set through its descriptor: a symlink planted at that name (a
 * --root another user can write) is neither followed nor chmod-ed.
 */
function writeAtomically(path: string, content: string, mode: number): void {
  const tmp = join(dirname(path), `.${path.slice(dirname(path).length + 1)}.ferry-new`);
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    writeSync(fd, content);
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** One line per action, as `ferry install-service` prints them ("would" before each in a dry run). */
export function describeAction(a: InstallAction, dryRun: boolean): string {
  const mode = 'mode' in a ? ` (${a.mode.toString(8).padStart(4, '0')})` : '';
  const why: Record<InstallAction['kind'], string> = {
    mkdir: 'make',
    chmod: 'tighten',
    create: 'write',
    update: 'update',
    replace: 'replace (--force)',
    same: 'unchanged',
    keep: 'keep (edited here)',
    refuse: 'REFUSE (edited here)',
  };
  const changes = a.kind !== 'same' && a.kind !== 'keep' && a.kind !== 'refuse';
  return `${`${dryRun && changes ? 'would ' : ''}${why[a.kind]}`.padEnd(24)} ${a.path}${mode}`;
}
