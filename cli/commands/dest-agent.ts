import { startDestAgent } from '../../dest-agent/dest-agent.js';
import { createLogger } from '../../shared/logging/logger.js';
import { availableTrackers } from '../../source-agent/trackers/choose-tracker.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { requireRoot, untilStopped } from './daemon.js';

export const DEST_AGENT_HELP = `Usage: ferry dest-agent --listen HOST:PORT [--work-dir DIR] [--metrics HOST:PORT] [--insecure-listen HOST]

Receives migrations: keeps each migration's pages, rebuilds CRIU's images, restores the task stopped and
resumes it when the source commits.

There is no authentication yet (mutual TLS is planned): the agent restores whatever a peer sends, as root.
So it listens on loopback only, unless --insecure-listen names the very address of --listen (for an
isolated test network).

Options:
  --listen HOST:PORT        gRPC address (required; port 0 picks a free port, printed at start)
  --work-dir DIR            page stores, images and CRIU logs (default /var/lib/ferry/dest)
  --metrics HOST:PORT       serve Prometheus metrics at http://HOST:PORT/metrics
  --insecure-listen HOST    allow a non-loopback --listen on HOST, unauthenticated
  -h, --help                this help`;

export async function destAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    listen: { type: 'string' },
    'work-dir': { type: 'string' },
    metrics: { type: 'string' },
    'insecure-listen': { type: 'string' },
  });
  if (values.help) {
    console.log(DEST_AGENT_HELP);
    return EXIT.ok;
  }
  const listen = parseHostPort(values.listen ?? '', '--listen address', { allowPortZero: true });
  const metrics = values.metrics ? parseHostPort(values.metrics, '--metrics address', { allowPortZero: true }) : undefined;
  requireRoot();
  const log = createLogger({ side: 'dest' });
  const agent = await startDestAgent({ listen, workDir: values['work-dir'] ?? '/var/lib/ferry/dest', insecureListen: values['insecure-listen'], metrics, log, trackers: availableTrackers });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', address: agent.address, port: agent.port, metricsPort: agent.metricsPort }));
  await untilStopped();
  await agent.close();
  return EXIT.ok;
}
