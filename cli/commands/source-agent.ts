import { createLogger } from '../../shared/logging/logger.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { startSourceAgent } from '../../source-agent/source-agent.js';
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
  const metrics = values.metrics ? parseHostPort(values.metrics, '--metrics address', { allowPortZero: true }) : undefined;
  requireRoot();
  const agent = await startSourceAgent({ listen, metrics, log: createLogger({ side: 'source' }) });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', address: agent.address, port: agent.port, metricsPort: agent.metricsPort }));
  await untilStopped();
  await agent.close();
  return EXIT.ok;
}
