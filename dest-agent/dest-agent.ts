/** Starts the dest agent: the Dest gRPC service on HOST:PORT, and /metrics when asked. */
import type { Logger } from '../shared/logging/logger.js';
import { createAgentRegistry } from '../shared/metrics/agent-registry.js';
import { checkMetricsAddress } from '../shared/metrics/metrics-server.js';
import type { HostPort } from '../shared/transport/address.js';
import { startAgentServer, type AgentServer } from '../shared/transport/agent-server.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { describeIdentity } from '../shared/transport/peer-identity.js';
import { ferryProto } from '../shared/transport/proto.js';
import type { TransportSecurity } from '../shared/transport/transport-security.js';
import { DestService } from './dest-service.js';
import type { DestLimits } from './dest-limits.js';
import { createDestMetrics } from './dest-metrics.js';
import { authorizeSource } from './source-authorization.js';
import { openWorkDir } from './work-dir.js';
import { compileDestLimits } from './dest-limits.js';
import { PageChannelServer, PRE_HELLO_CONNECTIONS } from './page-channel/page-channel-server.js';

export interface DestAgentOptions {
  listen: HostPort;
  workDir: string;
  /** Mutual TLS with the sources' allow-list (the CLI's default), or plaintext when asked for (--insecure). */
  security: TransportSecurity;
  metrics?: HostPort | undefined;
  log: Logger;
  /** The trackers this host could run as a source (Negotiate reports them); the CLI wires the source's probes. */
  trackers?: () => Promise<readonly string[]>;
  /** The agent's bounds (sessions, streams, idle times); the defaults of dest-limits.ts for the rest. */
  limits?: Partial<DestLimits>;
  /** The page-channel listener's port on the `listen` host; 0 (default): a free one. */
  pageChannelPort?: number;
  /** The bridge a task with its own network joins here; undefined: the source's bridge's name (`--bridge`). */
  bridge?: string | undefined;
}

/** The agent's servers; `pageChannelPort` is its page-channel listener's. */
export type DestAgent = AgentServer & { readonly pageChannelPort: number };

export async function startDestAgent(opts: DestAgentOptions): Promise<DestAgent> {
  checkListenPolicy(opts.listen, opts.security);
  if (opts.metrics) checkMetricsAddress(opts.metrics);
  // Before anything is removed: a directory Ferry did not make is refused whole.
  await openWorkDir(opts.workDir);
  const registry = await createAgentRegistry('dest');
  const limits = compileDestLimits(opts.limits);
  const pageChannels = new PageChannelServer(opts.security, opts.log, limits.maxStreams + PRE_HELLO_CONNECTIONS);
  const service = new DestService({ workDir: opts.workDir, log: opts.log, metrics: createDestMetrics(registry), trackers: opts.trackers, limits: opts.limits, pageChannels, bridge: opts.bridge });
  // Before the first call: a session the previous agent restored is live again, the others are ended.
  await service.recover();
  // Beside the gRPC listener, on its address: Prepare tells each source the port.
  const pageChannelPort = await pageChannels.listen(opts.listen.host, opts.pageChannelPort ?? 0, service.channelHost());
  let agent: AgentServer;
  try {
    agent = await startAgentServer({
      service: ferryProto().Dest.service,
      handlers: service.handlers(),
      listen: opts.listen,
      registry,
      metrics: opts.metrics,
      closeService: async () => {
        await service.close();
        await pageChannels.close();
      },
      security: opts.security,
      authorizePeer: authorizeSource(opts.log),
      side: 'dest',
      log: opts.log,
    });
  } catch (e) {
    await pageChannels.close();
    throw e;
  }
  const security = opts.security;
  if (security.kind === 'insecure') {
    opts.log.warn(
      `PLAINTEXT (--insecure), NO AUTHENTICATION: the dest agent on ${agent.address} restores whatever any peer that reaches it sends, as root. ` +
        'Use this only on loopback or an isolated test network; drop --insecure to require mutual TLS.',
    );
  } else {
    opts.log.info('mutual TLS', {
      identity: describeIdentity(security.material.identity),
      allowedSources: security.allowList.toString(),
      certificate: security.files.certFile,
      notAfter: security.material.notAfter.toISOString(),
    });
  }
  opts.log.info('dest agent listening', { address: agent.address, workDir: opts.workDir, metricsPort: agent.metricsPort, pageChannelPort });
  return Object.assign(agent, { pageChannelPort });
}
