/** Preflight facts of a tree with nothing to refuse, for fakes and as the base of the checks' unit tests. */
import type { AgentFacts, TaskFacts, TreeFacts } from '../../source-agent/preflight/preflight-facts.js';

export const ALL_CAPS = (1n << 41n) - 1n;

export function quietAgent(over: Partial<AgentFacts> = {}): AgentFacts {
  return { capEff: ALL_CAPS, uid: 0, gid: 0, ns: { ipc: 'ipc:[1]', net: 'net:[2]', mnt: 'mnt:[3]' }, sysvMessageQueues: 0, sysvSemaphores: 0, ...over };
}

export function quietTask(over: Partial<TaskFacts> = {}): TaskFacts {
  return {
    pid: 4242,
    name: 'fake',
    state: 'S',
    threads: 1,
    uids: [0, 0, 0, 0],
    gids: [0, 0, 0, 0],
    maps: [],
    hugeAreas: [],
    deviceMappings: [],
    fds: [],
    sockets: [],
    ns: { ipc: 'ipc:[11]', net: 'net:[12]', mnt: 'mnt:[13]' },
    threadsInKernel: [{ tid: 4242, state: 'S', stack: '', syscall: '7' }],
    ...over,
  };
}

export function quietTree(tasks: TaskFacts[] = [quietTask()]): TreeFacts {
  return { tasks, criuNeeds: { fileLocks: [], tcpConnections: [] } };
}

export function quietPreflightFacts(): { tree: TreeFacts; agent: AgentFacts } {
  return { tree: quietTree(), agent: quietAgent() };
}
