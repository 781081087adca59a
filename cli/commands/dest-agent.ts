import { startDestAgent } from '../../dest-agent/dest-agent.js';
import { useConfiguredCriu } from '../../shared/criu/criu-binary.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import { availableTrackers } from '../../source-agent/trackers/choose-tracker.js';
import { parse } from '../args.js';
import { CONFIG_FLAG, configHelp } from '../config/config-flag.js';
import { compileDestAgentConfig, loadAgentConfig } from '../config/agent-config.js';
import { EXIT } from '../exit-codes.js';
import { LISTEN_SECURITY_FLAGS, TLS_FLAGS, tlsHelp, transportSecurityFromFlags } from '../tls-flags.js';
import { requireRoot, untilStopped } from './daemon.js';

export const DEST_AGENT_HELP = `Usage: ferry dest-agent --listen HOST:PORT [--work-dir DIR] [--metrics HOST:PORT] [--bridge BR] [--config FILE] [TLS options]

Receives migrations: keeps each migration's pages, rebuilds CRIU's images, restores the task stopped and
resumes it when the source commits.

It restores what a source sends, as root, so it accepts only sources that authenticate with mutual TLS: a
certificate its CA issued, naming an identity on its allow-list. Plaintext (--insecure) is for tests, on
loopback unless --insecure-any-address is given as well.

Options:
  --listen HOST:PORT        gRPC address (required; port 0 picks a free port, printed at start)
  --work-dir DIR            page stores, images and CRIU logs (default /var/lib/ferry/dest)
  --metrics HOST:PORT       serve Prometheus metrics at http://HOST:PORT/metrics
  --page-channel-port PORT  the page channels' port, on the --listen host (default 0: a free one, printed
                            at start and told to each source; fix it where a firewall must let it through;
                            or page-channel-port in [dest-agent])
  --bridge BR               the bridge a task with its own network (\`ferry run --net\`) joins here; its
                            uplink must be on the task's segment (default: the source's bridge's name;
                            or bridge in [dest-agent]). Negotiate checks it exists and the task's
                            addresses are free on it.
${configHelp('dest-agent', 28)}
  -h, --help                this help

${tlsHelp('source', true)}`;

export async function destAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    listen: { type: 'string' },
    'work-dir': { type: 'string' },
    metrics: { type: 'string' },
    'page-channel-port': { type: 'string' },
    bridge: { type: 'string' },
    ...CONFIG_FLAG,
    ...TLS_FLAGS,
    ...LISTEN_SECURITY_FLAGS,
  });
  if (values.help) {
    console.log(DEST_AGENT_HELP);
    return EXIT.ok;
  }
  // Flags over FERRY_* over the file, all checked before anything is touched.
  const config = compileDestAgentConfig(values, loadAgentConfig(values.config));
  const { listen, metrics } = config;
  if (!listen) throw new FerryError('BAD_ADDRESS', { message: 'The dest agent needs --listen HOST:PORT (or listen in [dest-agent] of its config file)' });
  requireRoot();
  useConfiguredCriu(config.criuPath);
  // The dest only answers: its certificate serves TLS servers.
  const security = transportSecurityFromFlags(config.tls, ['server']);
  const log = createLogger({ side: 'dest' }, undefined, config.log.level, config.log.format);
  if (config.file) log.info('config', { file: config.file, settings: config.settings });
  const stopped = untilStopped();
  const agent = await startDestAgent({ listen, workDir: config.workDir, security, metrics, log, trackers: availableTrackers, pageChannelPort: config.pageChannelPort, bridge: config.bridge });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', address: agent.address, port: agent.port, metricsPort: agent.metricsPort, pageChannelPort: agent.pageChannelPort, tls: security.kind === 'tls' }));
  await stopped;
  await agent.close();
  return EXIT.ok;
}
