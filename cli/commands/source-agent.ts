import { execFileSync } from 'node:child_process';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { DEFAULT_SOURCE_SOCKET, startSourceAgent } from '../../source-agent/source-agent.js';
import { parse } from '../args.js';
import { TLS_FLAGS, tlsHelp, transportSecurityFromFlags } from '../tls-flags.js';
import { EXIT } from '../exit-codes.js';
import { requireRoot, untilStopped } from './daemon.js';

export const SOURCE_AGENT_HELP = `Usage: ferry source-agent [--socket PATH] [--socket-group GROUP] --allow-dest HOST:PORT... [--metrics HOST:PORT]

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
  -h, --help             this help

${tlsHelp('dest', false)}`;

export async function sourceAgentCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    socket: { type: 'string' },
    'socket-group': { type: 'string' },
    'allow-dest': { type: 'string', multiple: true },
    metrics: { type: 'string' },
    listen: { type: 'string' },
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
  const metrics = values.metrics ? parseHostPort(values.metrics, '--metrics address', { allowPortZero: true }) : undefined;
  const socketGid = values['socket-group'] === undefined ? undefined : groupId(values['socket-group']);
  // The agent dials dests: its certificate is a client's (checked now, before it listens).
  const dialSecurity = transportSecurityFromFlags(values, ['client']);
  requireRoot();
  const log = createLogger({ side: 'source' });
  if (dialSecurity.kind === 'insecure') log.warn('PLAINTEXT (--insecure): migrations dial the dests unauthenticated');
  const agent = await startSourceAgent({ socket: values.socket, socketGid, allowDests: values['allow-dest'] ?? [], dialSecurity, metrics, log });
  // One parseable line on stdout for scripts and tests: where the agent listens.
  console.log(JSON.stringify({ event: 'listening', socket: agent.socket, metricsPort: agent.metricsPort }));
  await untilStopped();
  await agent.close();
  return EXIT.ok;
}

/** A group name or number -> gid, through NSS (`getent`), so that LDAP or sssd groups work too. */
function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  const bad = (detail: string): never => {
    throw new FerryError('BAD_ARGUMENT', { message: `--socket-group: no group named "${group.slice(0, 64)}"`, hint: 'Create it (groupadd ferry) or name an existing group.', detail });
  };
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$/.test(group)) bad('not a group name');
  let line = '';
  try {
    line = execFileSync('getent', ['group', group], { encoding: 'utf8', timeout: 5_000 });
  } catch (e) {
    bad((e as Error).message);
  }
  const gid = line.split(':')[2];
  if (gid === undefined || !/^\d+$/.test(gid)) bad(`getent answered "${line.trim()}"`);
  return Number(gid);
}
