/**
 * nsfs handles: an fd onto a namespace file (an `ip netns` handle, a setns target) is dumped only when CRIU
 * knows the namespace, i.e. one of the tree's own (criu/namespaces.c, dump_one_ns_file: "No NS ID with kid").
 * Such an fd reads as "net:[INODE]", or as its path when it was opened through a bind mount (/run/netns/NAME):
 * the facts give the inode of either.
 */
import { NAMESPACE_KINDS, type TaskFacts } from './preflight-facts.js';
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

const NSFS = new RegExp(`^(${NAMESPACE_KINDS.join('|')}):\\[\\d+\\]$`);

export const nsfsHandlesCheck: PreflightCheck = {
  name: 'nsfs-handles',
  key: 'PREFLIGHT_NSFS_HANDLE',
  overridable: false,
  run({ tree }) {
    const own = new Set(tree.tasks.flatMap((t) => Object.values(t.ns)));
    const ownInodes = new Set([...own].map((l) => Number(/\[(\d+)\]$/.exec(l)?.[1])));
    const foreign = (f: TaskFacts['fds'][number]): boolean => (NSFS.test(f.target) ? !own.has(f.target) : f.nsInode !== undefined && !ownInodes.has(f.nsInode));
    const named = (f: TaskFacts['fds'][number]): string => (f.nsInode !== undefined ? `${f.target} (namespace inode ${f.nsInode})` : f.target);
    const handles = tree.tasks.flatMap((t) => t.fds.filter(foreign).map((f) => `pid ${t.pid} fd ${f.fd} -> ${named(f)}`));
    return handles.length > 0 ? refuse(`${handles.length} fd(s) onto namespaces outside the tree: ${some(handles)}`) : ok('no handles on foreign namespaces');
  },
};
