/** The dest's Prometheus metrics (docs/metrics.md: ferry_dest_*, base units, no pid or session id label). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Phase } from '../shared/phases.js';
import type { DestSessionListener, DestSessionState } from './session.js';

export interface DestMetrics {
  migrations: Counter<'result'>;
  pagesReceived: Counter;
  bytesReceived: Counter;
  restoreSeconds: Histogram;
  /** Post-copy: remote pages (no bytes on the dest at the resume) whose bytes the Fill gave the pager. */
  remotePages: Counter;
  /** Subscribe it to the session registry: the in-flight, state and phase gauges and the fill's duration. */
  onTransition: DestSessionListener;
}

type OpenState = Exclude<DestSessionState, 'committed' | 'aborted'>;
const OPEN_STATES: readonly OpenState[] = ['receiving', 'restoring', 'restored', 'filling'];
/** The phase each open state belongs to (the dest's side of the source's state machine, docs/protocol.md). */
const PHASE_OF_STATE: Readonly<Record<OpenState, Phase>> = { receiving: 'prepare', restoring: 'restore', restored: 'restore', filling: 'commit' };

function isOpen(s: DestSessionState | undefined): s is OpenState {
  return s !== undefined && s !== 'committed' && s !== 'aborted';
}

export function createDestMetrics(registry: Registry): DestMetrics {
  const registers = [registry];
  const migrations = new Counter({ name: 'ferry_dest_sessions_total', help: 'Dest sessions by outcome (committed, aborted; filled: a lazy fill finished)', labelNames: ['result'], registers });
  const inFlight = new Gauge({ name: 'ferry_dest_sessions_in_flight', help: 'Sessions open now', registers });
  const state = new Gauge({ name: 'ferry_dest_session_state', help: 'Open sessions in each state', labelNames: ['state'], registers });
  const phase = new Gauge({ name: 'ferry_dest_session_phase', help: 'Open sessions by the phase of their state', labelNames: ['phase'], registers });
  const fill = new Histogram({ name: 'ferry_dest_fill_duration_seconds', help: "Lazy restore: Commit resumed the copy to the pager's last page in", buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers });
  for (const result of ['committed', 'aborted', 'filled']) migrations.inc({ result }, 0);
  for (const s of OPEN_STATES) state.set({ state: s }, 0);
  for (const p of new Set(Object.values(PHASE_OF_STATE))) phase.set({ phase: p }, 0);
  // Sessions are few (bounded by dest-limits.ts); an entry lives from the resume to the fill's end.
  const fillingSince = new Map<string, number>();
  const onTransition: DestSessionListener = ({ session, from, to }) => {
    if (isOpen(from)) {
      state.dec({ state: from });
      phase.dec({ phase: PHASE_OF_STATE[from] });
    } else inFlight.inc();
    if (isOpen(to)) {
      state.inc({ state: to });
      phase.inc({ phase: PHASE_OF_STATE[to] });
    } else inFlight.dec();
    if (to === 'filling') fillingSince.set(session.id, performance.now());
    if (from === 'filling') {
      const since = fillingSince.get(session.id);
      fillingSince.delete(session.id);
      if (to === 'committed' && since !== undefined) fill.observe((performance.now() - since) / 1000);
    }
  };
  return {
    migrations,
    onTransition,
    pagesReceived: new Counter({ name: 'ferry_dest_pages_received_total', help: 'Pages received and verified by the dest', registers }),
    bytesReceived: new Counter({ name: 'ferry_dest_page_bytes_received_total', help: 'Page data bytes received, as stored (after decompression; zero pages travel as flags)', registers }),
    remotePages: new Counter({ name: 'ferry_dest_remote_pages_total', help: 'Post-copy: remote pages the pager got from the source during the fill', registers }),
    restoreSeconds: new Histogram({
      name: 'ferry_dest_restore_duration_seconds',
      help: 'criu restore wall time on the dest',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers,
    }),
  };
}
