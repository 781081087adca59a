import { useConfiguredCriu } from '../../shared/criu/criu-binary.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import { DEFAULT_SOURCE_SOCKET, startSourceAgent } from '../../source-agent/source-agent.js';
import { parse } from '../args.js';
import { compileSourceAgentConfig, loadAgentConfig } from '../config/agent-config.js';
import { CONFIG_FLAG, configHelp } from '../config/config-flag.js';
import { groupId } from '../socket-group.js';
import { TLS_FLAGS, tlsHelp, transportSecurityFromFlags } from '../tls-flags.js';
import { EXIT } from '../exit-codes.js';
import { requireRoot, untilStopped } from './daemon.js';

export const SOURCE_AGENT_HELP = `Usage: ferry source-agent [--socket PATH] [--socket-group GROUP] --allow-dest HOST:PORT... [--metrics HOST:PORT] [--config FILE]

Optional daemon on the source host: \`ferry migrate --via PATH\` runs migrations here, so they finish or
roll back even if the CLI goes away. Without it, \`ferry migrate\` runs the migration in-process.
It listens on a Unix socket only. Root may migrate any process; a member of --socket-group only process
trees it owns entirely (each uid and gid of each process its own), and everyone only to an --allow-dest.

Options:
  --socket PATH          the Unix socket (default ${DEFAULT_SOURCE_SOCKET}; its directory is made 0755 if
                         missing and must be writable by root only)
  --socket-group GROUP   let this group connect too (socket mode 0660); default root only (0600)
  --allow-dest HOST:PORT a dest migrations and checks may go to (repeatable; none = refuse every migration)
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics (loopback only)
${configHelp('source-agent', 25)}
                         (a repeated flag such as --allow-dest replaces the file's list)
  -h, --help             this help

${tlsHelp('dest', false)}`;

export async function sourceAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    socket: { type: 'string' },
    'socket-group': { type: 'string' },
    'allow-dest': { type: 'string', multiple: true },
    metrics: { type: 'string' },
    listen: { type: 'string' },
    ...CONFIG_FLAG,
    ...TLS_FLAGS,
  });
  if (values.help) {
    console.log(SOURCE_AGENT_HELP);
    return EXIT.ok;
  }
  if (values.listen !== undefined) {
    throw new FerryError('BAD_ARGUMENT', {
      message: 'the source agent no longer listens on TCP (any local user could drive it)',
      hint: 'Use --socket PATH (default /run/ferry/source.sock) and `ferry migrate --via PATH`.',
    });
  }
  // Flags over FERRY_* over the file, all checked before anything is touched.
  const config = compileSourceAgentConfig(values, loadAgentConfig(values.config));
  const { metrics, environment } = config;
  const socketGid = config.socketGroup === undefined ? undefined : groupId(config.socketGroup, values['socket-group'] === undefined ? `source-agent.socket-group of ${config.file}` : '--socket-group');
  useConfiguredCriu(config.criuPath);
  // The agent dials dests: its certificate is a client's (checked now, before it listens).
  const dialSecurity = transportSecurityFromFlags(config.tls, ['client']);
  requireRoot();
  const log = createLogger({ side: 'source' }, undefined, config.log.level, config.log.format);
  if (config.file) log.info('config', { file: config.file, settings: config.settings });
  if (dialSecurity.kind === 'insecure') log.warn('PLAINTEXT (--insecure): migrations dial the dests unauthenticated');
  const stopped = untilStopped();
  const agent = await startSourceAgent({ socket: config.socket, socketGid, allowDests: config.allowDests, dialSecurity, metrics, log, environment });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', socket: agent.socket, metricsPort: agent.metricsPort }));
  await stopped;
  await agent.close();
  return EXIT.ok;
}
