/** Starts the dest agent: the Dest gRPC service on HOST:PORT, and /metrics when asked. */
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../shared/logging/logger.js';
import { checkMetricsAddress } from '../shared/metrics/metrics-server.js';
import type { HostPort } from '../shared/transport/address.js';
import { startAgentServer, type AgentServer } from '../shared/transport/agent-server.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { ferryProto } from '../shared/transport/proto.js';
import { DestService } from './dest-service.js';
import type { DestLimits } from './dest-limits.js';
import { createDestMetrics } from './dest-metrics.js';
import { removeLeftoverSessions } from './leftovers.js';
import { openWorkDir } from './work-dir.js';

export interface DestAgentOptions {
  listen: HostPort;
  workDir: string;
  /** Non-loopback listen address the operator named explicitly: plaintext, unauthenticated, for test networks. */
  insecureListen?: string | undefined;
  metrics?: HostPort | undefined;
  log: Logger;
  /** The trackers this host could run as a source (Negotiate reports them); the CLI wires the source's probes. */
  trackers?: () => Promise<readonly string[]>;
  /** The agent's bounds (sessions, streams, idle times); the defaults of dest-limits.ts for the rest. */
  limits?: Partial<DestLimits>;
}

export type DestAgent = AgentServer;

export async function startDestAgent(opts: DestAgentOptions): Promise<DestAgent> {
  checkListenPolicy(opts.listen, opts.insecureListen);
  if (opts.metrics) checkMetricsAddress(opts.metrics);
  // Before anything is removed: a directory Ferry did not make is refused whole.
  await openWorkDir(opts.workDir);
  await removeLeftoverSessions(opts.workDir, opts.log);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const service = new DestService({ workDir: opts.workDir, log: opts.log, metrics: createDestMetrics(registry), trackers: opts.trackers, limits: opts.limits });
  const agent = await startAgentServer({
    service: ferryProto().Dest.service,
    handlers: service.handlers(),
    listen: opts.listen,
    registry,
    metrics: opts.metrics,
    closeService: () => service.close(),
  });
  opts.log.warn(
    `NO AUTHENTICATION: the dest agent on ${agent.address} restores whatever a peer sends, as root. ` +
      'Only loopback or an explicitly named test address is allowed until mutual TLS lands.',
  );
  opts.log.info('dest agent listening', { address: agent.address, workDir: opts.workDir, metricsPort: agent.metricsPort });
  return agent;
}
