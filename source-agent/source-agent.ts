/**
 * Starts the source agent: the Source gRPC service (Check, Migrate) on a loopback HOST:PORT, and /metrics
 * when asked. Migrations run under the agent's own signal: closing the agent rolls back what is in flight.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import type { Logger } from '../shared/logging/logger.js';
import type { HostPort } from '../shared/transport/address.js';
import { startAgentServer, type AgentServer } from '../shared/transport/agent-server.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { ferryProto } from '../shared/transport/proto.js';
import { SourceMetrics } from './source-metrics.js';
import { SourceService } from './source-service.js';

export interface SourceAgentOptions {
  listen: HostPort;
  metrics?: HostPort | undefined;
  log: Logger;
}

export type SourceAgent = AgentServer;

export async function startSourceAgent(opts: SourceAgentOptions): Promise<SourceAgent> {
  // Loopback only, whatever is asked: this agent can freeze any process of the host.
  checkListenPolicy(opts.listen, undefined);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const service = new SourceService(opts.log, new SourceMetrics(registry, PAGE_SIZE));
  const agent = await startAgentServer({
    service: ferryProto().Source.service,
    handlers: service.handlers(),
    listen: opts.listen,
    registry,
    metrics: opts.metrics,
    closeService: () => service.close(),
  });
  opts.log.info('source agent listening', { address: agent.address, metricsPort: agent.metricsPort });
  return agent;
}
