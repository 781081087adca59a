/**
 * Device mappings: CRIU dumps a mapping of a regular file or of /dev/zero; any other non-regular mapping only
 * through a device plugin (amdgpu, cuda), else "Can't handle non-regular mapping" (criu/proc_parse.c,
 * handle_vma). Ferry runs CRIU without plugins: a GPU's /dev/dri/renderD128 or /dev/nvidia0 mapping is refused.
 */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

/** /dev/zero: MEM_MAJOR 1, minor 5 (criu's DEVZERO). */
const isDevZero = (rdev: readonly [number, number]): boolean => rdev[0] === 1 && rdev[1] === 5;

export const deviceMappingsCheck: PreflightCheck = {
  name: 'device-mappings',
  key: 'PREFLIGHT_DEVICE_MAPPING',
  overridable: false,
  run({ tree }) {
    const maps = tree.tasks.flatMap((t) => t.deviceMappings.filter((d) => !isDevZero(d.rdev)).map((d) => `pid ${t.pid} 0x${d.start} ${d.path} (char ${d.rdev[0]}:${d.rdev[1]})`));
    return maps.length > 0 ? refuse(`${maps.length} device mapping(s): ${some(maps)}`) : ok('no device mappings but /dev/zero');
  },
};
