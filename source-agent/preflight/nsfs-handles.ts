/**
 * nsfs handles: an fd onto a namespace file (an `ip netns` handle, a setns target) is dumped only when CRIU
 * knows the namespace, i.e. one of the tree's own (criu/namespaces.c, dump_one_ns_file: "No NS ID with kid").
 */
import { NAMESPACE_KINDS } from './preflight-facts.js';
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

const NSFS = new RegExp(`^(${NAMESPACE_KINDS.join('|')}):\\[\\d+\\]$`);

export const nsfsHandlesCheck: PreflightCheck = {
  name: 'nsfs-handles',
  key: 'PREFLIGHT_NSFS_HANDLE',
  overridable: false,
  run({ tree }) {
    const own = new Set(tree.tasks.flatMap((t) => Object.values(t.ns)));
    const handles = tree.tasks.flatMap((t) => t.fds.filter((f) => NSFS.test(f.target) && !own.has(f.target)).map((f) => `pid ${t.pid} fd ${f.fd} -> ${f.target}`));
    return handles.length > 0 ? refuse(`${handles.length} fd(s) onto namespaces outside the tree: ${some(handles)}`) : ok('no handles on foreign namespaces');
  },
};
