/** File locks: CRIU refuses a tree holding one without --file-locks (criu/file-lock.c, "Some file locks are hold by dumping tasks!"). */
import { resolveFeature } from '../../shared/criu/criu-features.js';
import { note, ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const fileLocksCheck: PreflightCheck = {
  name: 'file-locks',
  key: 'PREFLIGHT_FILE_LOCKS',
  overridable: false,
  run({ tree, criuFeatures }) {
    const held = tree.criuNeeds.fileLocks.map((l) => `pid ${l.pid}: ${l.lock}`);
    if (held.length === 0) return ok('no file locks held');
    if (!resolveFeature(criuFeatures.fileLocks, true)) return refuse(`${held.length} task(s) hold file locks and --file-locks is off: ${some(held)}`);
    return note(`${held.length} task(s) hold file locks; CRIU carries them (--file-locks ${criuFeatures.fileLocks}): ${some(held)}`);
  },
};
