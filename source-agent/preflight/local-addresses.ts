/**
 * Local addresses: a socket bound to a specific local IP (listening or connected, TCP or UDP) is restored by
 * binding that IP again, which fails on a dest that lacks it. Wildcard and loopback addresses exist everywhere.
 * A task in its own network namespace takes its addresses along (CRIU dumps the namespace): nothing to compare.
 */
import { isLoopbackIp, isWildcardIp } from '../../shared/kernel/proc-net-sockets.js';
import { MAX_HOST_ADDRESSES } from '../../shared/kernel/host-addresses.js';
import { note, ok, refuse, some, type PreflightCheck } from './preflight-check.js';

/** An IPv4-mapped IPv6 address is bound as its IPv4 address. */
const plain = (ip: string): string => (ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip);

export const localAddressesCheck: PreflightCheck = {
  name: 'local-addresses',
  key: 'PREFLIGHT_LOCAL_ADDRESS',
  overridable: false,
  run({ tree, agent, dest }) {
    const bound = tree.tasks.flatMap((t) => t.sockets.filter((s) => !isWildcardIp(s.localIp) && !isLoopbackIp(s.localIp)).map((s) => ({ pid: t.pid, ownNet: t.ns.net !== agent.ns.net, s })));
    if (bound.length === 0) return ok('no socket bound to a specific non-loopback address');
    const shared = bound.filter((b) => !b.ownNet);
    if (shared.length === 0) return note(`${bound.length} socket(s) bound to specific addresses, in the task's own network namespace: they move with it`);
    if (!dest) return note(`${shared.length} socket(s) bound to specific addresses; not compared: needs the dest's answer (--to)`);
    if (!dest.addresses || dest.addresses.length === 0) return note('the dest does not report its addresses (an older Ferry): not compared');
    const there = new Set(dest.addresses.slice(0, MAX_HOST_ADDRESSES).map(plain));
    const missing = shared.filter((b) => !there.has(plain(b.s.localIp))).map((b) => `pid ${b.pid} ${b.s.table} ${b.s.localIp}:${b.s.localPort}`);
    if (missing.length > 0) return refuse(`the dest ${dest.hostname} lacks the local address of ${missing.length} socket(s): ${some(missing)}`, 'dest');
    return ok(`the dest has the ${shared.length} specific local address(es) the task's sockets are bound to`);
  },
};
