/**
 * A directory only this process's user may write: made 0700 when missing, and refused when it is a symlink,
 * another user's, or writable by group or others. Root writes the task's dump there: a directory another
 * local user made first (say /dev/shm/ferry) would let that user swap or read the images.
 */
import { lstatSync, mkdirSync } from 'node:fs';
import { FerryError } from '../errors/ferry-error.js';

export function ensurePrivateDirectory(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const st = lstatSync(path);
  const uid = process.geteuid?.() ?? st.uid;
  const problem = st.isSymbolicLink()
    ? 'it is a symbolic link'
    : !st.isDirectory()
      ? 'it is not a directory'
      : st.uid !== uid
        ? `it belongs to uid ${st.uid}`
        : (st.mode & 0o022) !== 0
          ? `its mode is ${(st.mode & 0o777).toString(8)} (group or others may write)`
          : undefined;
  if (problem) throw new FerryError('IMAGES_DIR_UNSAFE', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: `${path.slice(0, 200)}: ${problem}` });
}
