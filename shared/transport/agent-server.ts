/**
 * The gRPC server of an agent, with its /metrics beside it: bound with the one credentials factory, and
 * closed in the order that lets in-flight work finish or roll back (the service first, then the server).
 */
import * as grpc from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import { serveMetrics, type MetricsServer } from '../metrics/metrics-server.js';
import { formatHostPort, type HostPort } from './address.js';
import { serverCredentials } from './credentials.js';
import { SERVER_OPTIONS } from './proto.js';

export interface AgentServer {
  address: string;
  port: number;
  metricsPort: number | undefined;
  close(): Promise<void>;
}

export interface AgentServerOptions {
  service: grpc.ServiceDefinition;
  handlers: grpc.UntypedServiceImplementation;
  listen: HostPort;
  registry: Registry;
  metrics?: HostPort | undefined;
  /** Rolls back what the service has in flight; runs before the server stops. */
  closeService: () => Promise<void>;
}

export async function startAgentServer(o: AgentServerOptions): Promise<AgentServer> {
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(o.service, o.handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatHostPort(o.listen), serverCredentials(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  let metrics: MetricsServer | undefined;
  try {
    if (o.metrics) metrics = await serveMetrics(o.registry, o.metrics);
  } catch (e) {
    server.forceShutdown();
    throw e;
  }
  return {
    address: formatHostPort({ host: o.listen.host, port }),
    port,
    metricsPort: metrics?.port,
    close: async () => {
      await o.closeService();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await metrics?.close();
    },
  };
}
