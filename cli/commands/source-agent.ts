import * as grpc from '@grpc/grpc-js';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { createLogger } from '../../shared/logging/logger.js';
import { serveMetrics } from '../../shared/metrics/metrics-server.js';
import { formatHostPort, parseHostPort } from '../../shared/transport/address.js';
import { ferryProto, SERVER_OPTIONS } from '../../shared/transport/proto.js';
import { SourceMetrics } from '../../source-agent/source-metrics.js';
import { SourceService } from '../../source-agent/source-service.js';
import { checkListenPolicy } from '../../dest-agent/dest-agent.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { requireRoot, untilStopped } from './daemon.js';

export const SOURCE_AGENT_HELP = `Usage: ferry source-agent --listen HOST:PORT [--metrics HOST:PORT]

Optional daemon on the source host: \`ferry migrate --via HOST:PORT\` runs migrations here, so they finish
or roll back even if the CLI goes away. Without it, \`ferry migrate\` runs the migration in-process.
Loopback only (it can freeze any process of this host).

Options:
  --listen HOST:PORT     gRPC address (required)
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics
  -h, --help             this help`;

export async function sourceAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { listen: { type: 'string' }, metrics: { type: 'string' } });
  if (values.help) {
    console.log(SOURCE_AGENT_HELP);
    return EXIT.ok;
  }
  const listen = parseHostPort(values.listen ?? '', '--listen address', { allowPortZero: true });
  checkListenPolicy(listen, undefined);
  requireRoot();
  const log = createLogger({ side: 'source' });
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const service = new SourceService(log, new SourceMetrics(registry));
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(ferryProto().Source.service, service.handlers());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatHostPort(listen), grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const metrics = values.metrics ? await serveMetrics(registry, parseHostPort(values.metrics, '--metrics address', { allowPortZero: true })) : undefined;
  console.log(JSON.stringify({ event: 'listening', address: formatHostPort({ host: listen.host, port }), port, metricsPort: metrics?.port }));
  await untilStopped();
  await service.close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  await metrics?.close();
  return EXIT.ok;
}
