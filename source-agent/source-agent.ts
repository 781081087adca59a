/**
 * Starts the source agent: the Source gRPC service (Check, Migrate) on a Unix socket that only root (mode
 * 0600), or root and one group (0660), can connect to; each call is authorized for the connection's caller
 * (SO_PEERCRED) and only to the dests on the allow-list. /metrics on loopback when asked. Migrations run
 * under the agent's own signal: closing the agent rolls back what is in flight.
 *
 * Before it listens, it removes the images dirs that killed agents left under the images root (images-dir.ts).
 *
 * There is no TCP listener: a caller on another host would need mutual TLS and an identity to authorize,
 * which is a later mode, not a loopback port that any local user can reach.
 */
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import { createAgentRegistry } from '../shared/metrics/agent-registry.js';
import type { TransportSecurity } from '../shared/transport/transport-security.js';
import type { Logger } from '../shared/logging/logger.js';
import { serveMetrics, type MetricsServer } from '../shared/metrics/metrics-server.js';
import type { HostPort } from '../shared/transport/address.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { ferryProto } from '../shared/transport/proto.js';
import { startUnixSocketServer } from '../shared/transport/unix-socket-server.js';
import { DestAllowList } from './dest-allow-list.js';
import { sweepImagesRoot } from './images-dir.js';
import { SourceMetrics } from './source-metrics.js';
import { SourceService } from './source-service.js';
import { readSourceEnvironment, sourceJournalDir, type SourceEnvironment } from './config/environment.js';
import { startResolveLoop } from './resolve-loop.js';

export const DEFAULT_SOURCE_SOCKET = '/run/ferry/source.sock';

export interface SourceAgentOptions {
  /** Path of the Unix socket (default DEFAULT_SOURCE_SOCKET). */
  socket?: string | undefined;
  /** Group that may connect besides root (socket mode 0660); undefined = root only (0600). */
  socketGid?: number | undefined;
  /** HOST:PORT of every dest a migration or a check may go to; none = refuse them all. */
  allowDests: readonly string[];
  /** How migrations and checks dial the dests: mutual TLS (the CLI's default) or plaintext when asked. */
  dialSecurity: TransportSecurity;
  metrics?: HostPort | undefined;
  /** Where migrations put their dumps (default the environment's images root): swept at start. */
  imagesRoot?: string | undefined;
  log: Logger;
  /** Where this host's migrations journal (default from the environment's state dir): the daemon finishes those left unresolved. */
  journalDir?: string | undefined;
  /** FERRY_* over the config file's [paths], as the command compiled them; default the variables alone. */
  environment?: SourceEnvironment | undefined;
}

export interface SourceAgent {
  /** The absolute path of the socket. */
  socket: string;
  metricsPort: number | undefined;
  close(): Promise<void>;
}

export async function startSourceAgent(opts: SourceAgentOptions): Promise<SourceAgent> {
  const allowDests = new DestAllowList(opts.allowDests);
  // Loopback only: the metrics name the tasks and dests of this host.
  if (opts.metrics) checkListenPolicy(opts.metrics, undefined);
  const environment = opts.environment ?? readSourceEnvironment();
  await sweepImagesRoot(opts.imagesRoot ?? environment.imagesRoot, opts.log);
  const registry = await createAgentRegistry('source');
  const service = new SourceService(opts.log, new SourceMetrics(registry, PAGE_SIZE), allowDests, opts.dialSecurity, environment);
  const server = await startUnixSocketServer({
    path: opts.socket ?? DEFAULT_SOURCE_SOCKET,
    gid: opts.socketGid,
    service: ferryProto().Source.service,
    handlersFor: (caller) => service.handlers(caller),
    log: opts.log,
  });
  let metrics: MetricsServer | undefined;
  try {
    if (opts.metrics) metrics = await serveMetrics(registry, opts.metrics);
  } catch (e) {
    server.close();
    throw e;
  }
  const resolver = startResolveLoop({ journalDir: opts.journalDir ?? sourceJournalDir(environment), dialSecurity: opts.dialSecurity, log: opts.log });
  if (allowDests.size === 0) opts.log.warn('no --allow-dest given: every Migrate, and every Check with a dest, will be refused');
  opts.log.info('source agent listening', { socket: server.path, socketGid: opts.socketGid, allowDests: opts.allowDests, metricsPort: metrics?.port });
  return {
    socket: server.path,
    metricsPort: metrics?.port,
    close: async () => {
      await resolver.stop();
      await service.close();
      server.close();
      await metrics?.close();
    },
  };
}
