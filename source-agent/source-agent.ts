/**
 * Starts the source agent: the Source gRPC service (Check, Migrate) on a loopback HOST:PORT, and /metrics
 * when asked. Migrations run under the agent's own signal: closing the agent rolls back what is in flight.
 */
import * as grpc from '@grpc/grpc-js';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import type { Logger } from '../shared/logging/logger.js';
import { serveMetrics, type MetricsServer } from '../shared/metrics/metrics-server.js';
import { formatHostPort, type HostPort } from '../shared/transport/address.js';
import { serverCredentials } from '../shared/transport/credentials.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { ferryProto, SERVER_OPTIONS } from '../shared/transport/proto.js';
import { SourceMetrics } from './source-metrics.js';
import { SourceService } from './source-service.js';

export interface SourceAgentOptions {
  listen: HostPort;
  metrics?: HostPort | undefined;
  log: Logger;
}

export interface SourceAgent {
  address: string;
  port: number;
  metricsPort: number | undefined;
  close(): Promise<void>;
}

export async function startSourceAgent(opts: SourceAgentOptions): Promise<SourceAgent> {
  // Loopback only, whatever is asked: this agent can freeze any process of the host.
  checkListenPolicy(opts.listen, undefined);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const service = new SourceService(opts.log, new SourceMetrics(registry, PAGE_SIZE));
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(ferryProto().Source.service, service.handlers());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatHostPort(opts.listen), serverCredentials(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  let metrics: MetricsServer | undefined;
  if (opts.metrics) metrics = await serveMetrics(registry, opts.metrics);
  const address = formatHostPort({ host: opts.listen.host, port });
  opts.log.info('source agent listening', { address, metricsPort: metrics?.port });
  return {
    address,
    port,
    metricsPort: metrics?.port,
    close: async () => {
      await service.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await metrics?.close();
    },
  };
}
