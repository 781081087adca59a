/**
 * The tables and keys of the agents' config file. Keys are the flags' own names and each is checked by its
 * flag's own parser, so an operator learns one vocabulary: [dest-agent] and [source-agent] hold each agent's
 * flags, [tls], [log], [paths] and [criu] what both share (the --tls-* files and what FERRY_* variables set).
 */
import { field, type ConfigValues } from '../../shared/config/config-schema.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PeerAllowList } from '../../shared/transport/peer-allow-list.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { DestAllowList } from '../../source-agent/dest-allow-list.js';
import { criuLinkNameProblem } from '../../shared/kernel/link-name.js';
import { isGroupName } from '../socket-group.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevelSetting = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text', 'auto'] as const;
export type LogFormatSetting = (typeof LOG_FORMATS)[number];

const text = (v: unknown): string => v as string;

function bad(message: string): never {
  throw new FerryError('BAD_ARGUMENT', { message });
}

const hostPort = (allowPortZero: boolean) => field(['string'], (v) => parseHostPort(text(v), 'address', { allowPortZero }));

// A relative path in a file read by a service would mean whatever its working directory is.
const absolutePath = field(['string'], (v) => (text(v).startsWith('/') ? text(v) : bad(`must be an absolute path (got "${text(v).slice(0, 64)}")`)));

const flag = field(['boolean'], (v) => v as boolean);

// The dest's bridge goes to criu (`veth[..]:..@BRIDGE`): a name criu cannot parse is refused at start.
const linkName = field(['string'], (v) => {
  const problem = criuLinkNameProblem(text(v));
  return problem ? bad(`must be an interface name: ${problem}`) : text(v);
});

const port = field(['integer'], (v) => (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535 ? (v as number) : bad(`must be a port from 0 to 65535 (got ${String(v)})`)));

const oneOf = <T extends string>(choices: readonly T[]) =>
  field(['string'], (v) => ((choices as readonly string[]).includes(text(v)) ? (text(v) as T) : bad(`must be one of ${choices.join(', ')} (got "${text(v).slice(0, 64)}")`)));

const allowPeers = field(['string-list'], (v) => {
  const list = v as readonly string[];
  PeerAllowList.parse(list, 'entry');
  return list;
});

const allowDests = field(['string-list'], (v) => {
  const list = v as readonly string[];
  for (const entry of list) parseHostPort(entry, 'address');
  // Its other bounds (an entry's length) as the flag's.
  new DestAllowList(list);
  return list;
});

// Resolved (getent) only by the source agent that uses it: a dest host need not have the source's group.
const socketGroup = field(['string', 'integer'], (v) => {
  const group = String(v);
  return isGroupName(group) ? group : bad(`"${group.slice(0, 64)}" is not a group name or number`);
});

export const AGENT_CONFIG_SCHEMA = {
  'dest-agent': {
    listen: hostPort(true),
    'work-dir': absolutePath,
    metrics: hostPort(true),
    'page-channel-port': port,
    bridge: linkName,
    'allow-peer': allowPeers,
    insecure: flag,
    'insecure-any-address': flag,
  },
  'source-agent': {
    socket: absolutePath,
    'socket-group': socketGroup,
    'allow-dest': allowDests,
    metrics: hostPort(true),
    'allow-peer': allowPeers,
    insecure: flag,
  },
  tls: { cert: absolutePath, key: absolutePath, ca: absolutePath },
  log: { level: oneOf(LOG_LEVELS), format: oneOf(LOG_FORMATS) },
  paths: { 'images-dir': absolutePath, 'state-dir': absolutePath },
  criu: { path: absolutePath },
} as const;

export type AgentConfigValues = ConfigValues<typeof AGENT_CONFIG_SCHEMA>;

/** What an operator may write who knows the flags or the variables: told where it goes instead. */
export const CONFIG_ALIASES: Readonly<Record<string, string>> = {
  'tls-cert': 'tls.cert',
  'tls-key': 'tls.key',
  'tls-ca': 'tls.ca',
  'log-level': 'log.level',
  'log-format': 'log.format',
  FERRY_LOG_LEVEL: 'log.level',
  FERRY_LOG_FORMAT: 'log.format',
  FERRY_IMAGES_DIR: 'paths.images-dir',
  FERRY_STATE_DIR: 'paths.state-dir',
  FERRY_CRIU: 'criu.path',
};
