/** Starts the dest agent: the Dest gRPC service on HOST:PORT, and /metrics when asked. */
import * as grpc from '@grpc/grpc-js';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../shared/logging/logger.js';
import { serveMetrics, type MetricsServer } from '../shared/metrics/metrics-server.js';
import { formatHostPort, type HostPort } from '../shared/transport/address.js';
import { serverCredentials } from '../shared/transport/credentials.js';
import { checkListenPolicy } from '../shared/transport/listen-policy.js';
import { ferryProto, SERVER_OPTIONS } from '../shared/transport/proto.js';
import { DestService } from './dest-service.js';
import { createDestMetrics } from './dest-metrics.js';
import { removeLeftoverSessions } from './leftovers.js';

export interface DestAgentOptions {
  listen: HostPort;
  workDir: string;
  /** Non-loopback listen address the operator named explicitly: plaintext, unauthenticated, for test networks. */
  insecureListen?: string | undefined;
  metrics?: HostPort | undefined;
  log: Logger;
  /** The trackers this host could run as a source (Negotiate reports them); the CLI wires the source's probes. */
  trackers?: () => Promise<readonly string[]>;
}

export interface DestAgent {
  address: string;
  port: number;
  metricsPort: number | undefined;
  close(): Promise<void>;
}

export async function startDestAgent(opts: DestAgentOptions): Promise<DestAgent> {
  checkListenPolicy(opts.listen, opts.insecureListen);
  await removeLeftoverSessions(opts.workDir, opts.log);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const service = new DestService({ workDir: opts.workDir, log: opts.log, metrics: createDestMetrics(registry), trackers: opts.trackers });
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(ferryProto().Dest.service, service.handlers());
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatHostPort(opts.listen), serverCredentials(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  let metrics: MetricsServer | undefined;
  if (opts.metrics) metrics = await serveMetrics(registry, opts.metrics);
  const address = formatHostPort({ host: opts.listen.host, port });
  opts.log.warn(
    `NO AUTHENTICATION: the dest agent on ${address} restores whatever a peer sends, as root. ` +
      'Only loopback or an explicitly named test address is allowed until mutual TLS lands.',
  );
  opts.log.info('dest agent listening', { address, workDir: opts.workDir, metricsPort: metrics?.port });
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
