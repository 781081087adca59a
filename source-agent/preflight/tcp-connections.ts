/**
 * Connected TCP sockets: CRIU refuses them without --tcp-established ("Connected TCP socket, consider using
 * --tcp-established", criu/sk-inet.c); with it, a network lock must work on the source (the dump) and the dest
 * (its "criu-tcp-established" feature, for the restore). The same conditions as criu-features-choice.ts, which
 * the freeze applies again to what the tree holds then.
 */
import { resolveFeature, TCP_ESTABLISHED_FEATURE } from '../../shared/criu/criu-features.js';
import { note, ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const tcpConnectionsCheck: PreflightCheck = {
  name: 'tcp-connections',
  key: 'PREFLIGHT_TCP_CONNECTED',
  overridable: false,
  run({ tree, criuFeatures, networkLock, dest }) {
    const conns = tree.criuNeeds.tcpConnections.map((c) => `pid ${c.pid} ${c.local} -> ${c.remote} ${c.state}`);
    const on = resolveFeature(criuFeatures.tcpEstablished, conns.length > 0);
    if (conns.length > 0 && !on) return refuse(`${conns.length} connected TCP socket(s) and --tcp-established is ${criuFeatures.tcpEstablished}: ${some(conns)}`);
    if (!on) return ok('no connected TCP sockets');
    const why = conns.length > 0 ? `${conns.length} connected TCP socket(s)` : '--tcp-established on';
    // TCP_LOCK_UNAVAILABLE is criu-features-choice.ts's code for these: the finding keeps it (see preflight.ts).
    if (networkLock === undefined) return { verdict: 'refuse', message: `${why}; this criu has no nftables support and iptables-restore is not on PATH`, side: 'source', key: 'TCP_LOCK_UNAVAILABLE' };
    if (dest && !dest.features.includes(TCP_ESTABLISHED_FEATURE)) {
      return { verdict: 'refuse', message: `${why}; the dest does not offer "${TCP_ESTABLISHED_FEATURE}" (no network lock there)`, side: 'dest', key: 'TCP_LOCK_UNAVAILABLE' };
    }
    return note(`${why}; CRIU repairs them (--tcp-established, network lock ${networkLock}${dest ? '' : '; the dest\'s lock needs its answer (--to)'}): ${some(conns)}`);
  },
};
