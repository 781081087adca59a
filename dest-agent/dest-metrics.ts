import { Counter, Histogram, type Registry } from 'prom-client';

export interface DestMetrics {
  migrations: Counter<'result'>;
  pagesReceived: Counter;
  bytesReceived: Counter;
  restoreSeconds: Histogram;
  /** Post-copy: remote pages (no bytes on the dest at the resume) whose bytes the Fill gave the pager. */
  remotePages: Counter;
}

export function createDestMetrics(registry: Registry): DestMetrics {
  const registers = [registry];
  return {
    migrations: new Counter({ name: 'ferry_dest_sessions_total', help: 'Dest sessions by outcome', labelNames: ['result'], registers }),
    pagesReceived: new Counter({ name: 'ferry_dest_pages_received_total', help: 'Pages received and verified by the dest', registers }),
    bytesReceived: new Counter({ name: 'ferry_dest_page_bytes_received_total', help: 'Page data bytes received (zero pages travel as flags)', registers }),
    remotePages: new Counter({ name: 'ferry_dest_remote_pages_total', help: 'Post-copy: remote pages the pager got from the source during the fill', registers }),
    restoreSeconds: new Histogram({
      name: 'ferry_restore_seconds',
      help: 'criu restore wall time on the dest',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers,
    }),
  };
}
