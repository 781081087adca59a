/**
 * Mount paths: a task with its own mount namespace (`ferry run --mounts private`) is dumped with the host's
 * mounts declared external, and criu restore bind-mounts the dest's file system at each of those paths: a path
 * the dest lacks fails the restore, after the freeze (the dest's Restore refuses it, FERRY-6007). The source
 * sends the paths with Negotiate and the dest answers which it lacks, so that the refusal comes first.
 */
import { MOUNT_PATHS_FEATURE } from '../../shared/peer-info.js';
import { note, ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const mountPathsCheck: PreflightCheck = {
  name: 'mount-paths',
  key: 'PREFLIGHT_MOUNT_MISSING',
  overridable: false,
  run({ tree, dest, missingMounts }) {
    const paths = tree.externalMounts;
    if (paths === undefined) return ok("the task shares this agent's mount namespace: no mounts to declare");
    if (paths.length === 0) return ok('the task has its own mount namespace, with no mounts of this host in it');
    if (!dest) return note(`${paths.length} mount(s) of this host in the task's mount namespace; not compared: needs the dest's answer (--to)`);
    if (!dest.features.includes(MOUNT_PATHS_FEATURE)) return note(`the dest does not answer which of ${paths.length} mount path(s) it lacks (an older Ferry): its restore checks them`);
    const missing = missingMounts ?? [];
    if (missing.length > 0) return refuse(`the dest ${dest.hostname} lacks ${missing.length} of the ${paths.length} path(s) the task's mounts need: ${some(missing, 8)}`, 'dest');
    return ok(`the dest has all ${paths.length} path(s) of the task's external mounts`);
  },
};
