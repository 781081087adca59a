/**
 * SysV IPC of the host's IPC namespace: CRIU dumps SysV objects only with the IPC namespace that holds them, so
 * it refuses a task mapping SysV shm of a namespace it does not own ("Task %d with SysVIPC shmem map @%lx
 * doesn't live in IPC ns", criu/cr-dump.c, check_sysvipc_map_dump). Message queues and semaphores a task uses
 * leave no trace in its /proc entry: when the namespace the task shares holds some, the check can only say so.
 */
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { note, ok, refuse, some, type PreflightCheck } from './preflight-check.js';

/** How the kernel names the file behind a SysV shm mapping (ipc/shm.c: "SYSV%08x"). */
const SYSV_SHM = /^\/SYSV[0-9a-f]{8}( \(deleted\))?$/;

export const sysvIpcCheck: PreflightCheck = {
  name: 'sysv-ipc',
  key: 'PREFLIGHT_SYSV_IPC',
  overridable: false,
  run({ tree, agent }) {
    const sharing = tree.tasks.filter((t) => t.ns.ipc !== undefined && t.ns.ipc === agent.ns.ipc);
    if (sharing.length === 0) return ok('the tree has its own IPC namespace');
    const maps = sharing.flatMap((t) => t.maps.filter((v) => SYSV_SHM.test(v.path)).map((v) => `pid ${t.pid} ${v.path.split(' ')[0]} @0x${(v.startPage * PAGE_SIZE).toString(16)}`));
    if (maps.length > 0) return refuse(`${maps.length} SysV shm mapping(s) of this host's IPC namespace: ${some(maps)}`);
    if (agent.sysvMessageQueues + agent.sysvSemaphores > 0) {
      return note(`the tree shares this host's IPC namespace, which holds ${agent.sysvMessageQueues} message queue(s) and ${agent.sysvSemaphores} semaphore set(s): a task using one would fail after the move`);
    }
    return ok('no SysV shm mapped; the host\'s IPC namespace holds no message queues or semaphores');
  },
};
