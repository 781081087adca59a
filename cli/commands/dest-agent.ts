import { startDestAgent } from '../../dest-agent/dest-agent.js';
import { createLogger } from '../../shared/logging/logger.js';
import { availableTrackers } from '../../source-agent/trackers/choose-tracker.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { LISTEN_SECURITY_FLAGS, TLS_FLAGS, tlsHelp, transportSecurityFromFlags } from '../tls-flags.js';
import { requireRoot, untilStopped } from './daemon.js';

export const DEST_AGENT_HELP = `Usage: ferry dest-agent --listen HOST:PORT [--work-dir DIR] [--metrics HOST:PORT] [TLS options]

Receives migrations: keeps each migration's pages, rebuilds CRIU's images, restores the task stopped and
resumes it when the source commits.

It restores what a source sends, as root, so it accepts only sources that authenticate with mutual TLS: a
certificate its CA issued, naming an identity on its allow-list. Plaintext (--insecure) is for tests, on
loopback unless --insecure-any-address is given as well.

Options:
  --listen HOST:PORT        gRPC address (required; port 0 picks a free port, printed at start)
  --work-dir DIR            page stores, images and CRIU logs (default /var/lib/ferry/dest)
  --metrics HOST:PORT       serve Prometheus metrics at http://HOST:PORT/metrics
  -h, --help                this help

${tlsHelp('source', true)}`;

export async function destAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    listen: { type: 'string' },
    'work-dir': { type: 'string' },
    metrics: { type: 'string' },
    ...TLS_FLAGS,
    ...LISTEN_SECURITY_FLAGS,
  });
  if (values.help) {
    console.log(DEST_AGENT_HELP);
    return EXIT.ok;
  }
  const listen = parseHostPort(values.listen ?? '', '--listen address', { allowPortZero: true });
  const metrics = values.metrics ? parseHostPort(values.metrics, '--metrics address', { allowPortZero: true }) : undefined;
  requireRoot();
  // The dest only answers: its certificate serves TLS servers.
  const security = transportSecurityFromFlags(values, ['server']);
  const log = createLogger({ side: 'dest' });
  const agent = await startDestAgent({ listen, workDir: values['work-dir'] ?? '/var/lib/ferry/dest', security, metrics, log, trackers: availableTrackers });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', address: agent.address, port: agent.port, metricsPort: agent.metricsPort, tls: security.kind === 'tls' }));
  await untilStopped();
  await agent.close();
  return EXIT.ok;
}
