/**
 * The agents' settings, compiled once at start from four layers: flag > FERRY_* variable > config file >
 * built-in default. A list flag given replaces the file's list. Each setting remembers where it came from,
 * for the agent's start line and `ferry config check`. The file is read and validated whole first, so that a
 * bad key fails the start before anything is touched, whichever agent it is for.
 */
import { chooseConfigFile, readConfigDocument } from '../../shared/config/config-file.js';
import { configInvalid } from '../../shared/config/config-problems.js';
import { validateConfig } from '../../shared/config/config-schema.js';
import { useConfiguredCriu } from '../../shared/criu/criu-binary.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { criuLinkNameProblem } from '../../shared/kernel/link-name.js';
import { formatHostPort, parseHostPort, type HostPort } from '../../shared/transport/address.js';
import { tlsFilesFrom } from '../../shared/transport/transport-security.js';
import { readSourceEnvironment, setInEnvironment, type SourceEnvironment, type SourcePathsConfig } from '../../source-agent/config/environment.js';
import { DEFAULT_SOURCE_SOCKET } from '../../source-agent/source-agent.js';
import type { TlsFlagValues } from '../tls-flags.js';
import { AGENT_CONFIG_SCHEMA, CONFIG_ALIASES, LOG_LEVELS, LOG_FORMATS, type AgentConfigValues, type LogFormatSetting, type LogLevelSetting } from './agent-config-schema.js';

export const DEFAULT_DEST_WORK_DIR = '/var/lib/ferry/dest';

export type Origin = 'flag' | 'env' | 'file' | 'default';

export type SettingValue = string | boolean | readonly string[] | null;

/** One effective setting: its dotted key, its value as an operator writes it, and where it came from. */
export interface Setting {
  key: string;
  value: SettingValue;
  from: Origin;
  /** The flag or variable that set it, or the file's path. */
  by?: string | undefined;
  /** Why the value is what it is when that is not obvious (unset, set aside). */
  note?: string | undefined;
}

export interface AgentConfigFile {
  /** The file read, or undefined when there was none (the default path absent). */
  path: string | undefined;
  values: AgentConfigValues;
}

/** Reads and validates the whole file (`--config`, else $FERRY_CONFIG, else the default path if present). */
export function loadAgentConfig(configFlag: string | undefined, env: NodeJS.ProcessEnv = process.env): AgentConfigFile {
  const doc = readConfigDocument(chooseConfigFile(configFlag, env));
  if (!doc) return { path: undefined, values: validateConfig({}, new Map(), AGENT_CONFIG_SCHEMA).values };
  const { values, problems } = validateConfig(doc.table, doc.lines, AGENT_CONFIG_SCHEMA, { aliases: CONFIG_ALIASES });
  if (problems.length > 0) throw configInvalid(doc.path, problems);
  return { path: doc.path, values };
}

/** What both agents share: logging, the source's paths, CRIU. */
export interface SharedSettings {
  log: {
    /** createLogger's defaultLevel: the file's, else info (FERRY_LOG_LEVEL still overrides it in the logger). */
    level: LogLevelSetting;
    /** The file's, else auto; below FERRY_LOG_FORMAT likewise. */
    format: LogFormatSetting;
  };
  /** The config file's [criu] path (for useConfiguredCriu); FERRY_CRIU stays above it. */
  criuPath: string | undefined;
}

export interface CompiledDestAgentConfig extends SharedSettings {
  file: string | undefined;
  /** Undefined when neither --listen nor the file gives it: the command refuses to start. */
  listen: HostPort | undefined;
  workDir: string;
  metrics: HostPort | undefined;
  /** The page-channel listener's port (0: a free one). */
  pageChannelPort: number;
  /** The bridge a task with its own network joins here (`ferry run --net`); undefined: the source's bridge's name. */
  bridge: string | undefined;
  /** The transport security settings, in the flags' shape, for transportSecurityFromFlags. */
  tls: TlsFlagValues;
  settings: Setting[];
}

export interface CompiledSourceAgentConfig extends SharedSettings {
  file: string | undefined;
  socket: string;
  /** A group name or number (resolved with getent when the agent starts). */
  socketGroup: string | undefined;
  allowDests: readonly string[];
  metrics: HostPort | undefined;
  tls: TlsFlagValues;
  /** FERRY_IMAGES_DIR / FERRY_STATE_DIR over the file's [paths]. */
  environment: SourceEnvironment;
  settings: Setting[];
}

export interface DestAgentFlags extends TlsFlagValues {
  listen?: string | undefined;
  'work-dir'?: string | undefined;
  metrics?: string | undefined;
  'page-channel-port'?: string | undefined;
  bridge?: string | undefined;
}

export interface SourceAgentFlags extends TlsFlagValues {
  socket?: string | undefined;
  'socket-group'?: string | undefined;
  'allow-dest'?: string[] | undefined;
  metrics?: string | undefined;
}

/** Collects the settings as they are picked: the value of the highest layer that has one. */
class Picker {
  readonly settings: Setting[] = [];

  constructor(private readonly file: string | undefined) {}

  pick<T>(
    key: string,
    layers: { flag?: [string, T | undefined]; env?: [string, T | undefined]; file?: T | undefined; fallback: T },
    show: (v: T) => SettingValue = (v) => (v === undefined ? null : (v as SettingValue)),
  ): T {
    const [flagName, flagValue] = layers.flag ?? ['', undefined];
    const [envName, envValue] = layers.env ?? ['', undefined];
    let value: T;
    let from: Origin;
    let by: string | undefined;
    if (flagValue !== undefined) [value, from, by] = [flagValue, 'flag', flagName];
    else if (envValue !== undefined) [value, from, by] = [envValue, 'env', envName];
    else if (layers.file !== undefined) [value, from, by] = [layers.file, 'file', this.file];
    else [value, from] = [layers.fallback, 'default'];
    this.settings.push({ key, value: show(value), from, ...(by !== undefined && { by }) });
    return value;
  }

  note(key: string, note: string): void {
    const s = this.settings.find((x) => x.key === key);
    if (s) s.note = note;
  }
}

const showHostPort = (v: HostPort | undefined): SettingValue => (v ? formatHostPort(v) : null);

function flagHostPort(flag: string, v: string | undefined): HostPort | undefined {
  return v === undefined ? undefined : parseHostPort(v, `--${flag} address`, { allowPortZero: true });
}

function flagPort(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!(n <= 65535)) throw new FerryError('BAD_ARGUMENT', { message: `--${flag} must be a port from 0 to 65535 (got "${v.slice(0, 64)}")` });
  return n;
}

function flagLinkName(flag: string, v: string | undefined): string | undefined {
  const problem = v === undefined ? undefined : criuLinkNameProblem(v);
  if (problem) throw new FerryError('BAD_ARGUMENT', { message: `--${flag}: ${problem.slice(0, 120)}`, hint: 'Give an interface name of 1 to 15 bytes of A-Z a-z 0-9 _ . - (criu cannot be given others).' });
  return v;
}

/** A repeated list flag replaces the file's list; not given, it leaves it. */
function flagList(v: readonly string[] | undefined): readonly string[] | undefined {
  return v && v.length > 0 ? v : undefined;
}

export function compileDestAgentConfig(flags: DestAgentFlags, file: AgentConfigFile, env: NodeJS.ProcessEnv = process.env): CompiledDestAgentConfig {
  const d = file.values['dest-agent'];
  const p = new Picker(file.path);
  const listen = p.pick('dest-agent.listen', { flag: ['--listen', flagHostPort('listen', flags.listen)], file: d.listen, fallback: undefined }, showHostPort);
  if (!listen) p.note('dest-agent.listen', 'required: give --listen or listen in [dest-agent]');
  const workDir = p.pick('dest-agent.work-dir', { flag: ['--work-dir', flags['work-dir']], file: d['work-dir'], fallback: DEFAULT_DEST_WORK_DIR });
  const metrics = p.pick('dest-agent.metrics', { flag: ['--metrics', flagHostPort('metrics', flags.metrics)], file: d.metrics, fallback: undefined }, showHostPort);
  const pageChannelPort = p.pick('dest-agent.page-channel-port', { flag: ['--page-channel-port', flagPort('page-channel-port', flags['page-channel-port'])], file: d['page-channel-port'], fallback: 0 });
  const bridge = p.pick('dest-agent.bridge', { flag: ['--bridge', flagLinkName('bridge', flags.bridge)], file: d.bridge, fallback: undefined });
  if (bridge === undefined) p.note('dest-agent.bridge', "unset: a task's own network joins the bridge of the source's name");
  const tls = pickSecurity(p, 'dest-agent', flags, file, env, true);
  return { file: file.path, listen, workDir, metrics, pageChannelPort, bridge, tls, ...pickShared(p, file, env, false), settings: p.settings };
}

export function compileSourceAgentConfig(flags: SourceAgentFlags, file: AgentConfigFile, env: NodeJS.ProcessEnv = process.env): CompiledSourceAgentConfig {
  const s = file.values['source-agent'];
  const p = new Picker(file.path);
  const socket = p.pick('source-agent.socket', { flag: ['--socket', flags.socket], file: s.socket, fallback: DEFAULT_SOURCE_SOCKET });
  const socketGroup = p.pick('source-agent.socket-group', { flag: ['--socket-group', flags['socket-group']], file: s['socket-group'], fallback: undefined });
  const allowDests = p.pick('source-agent.allow-dest', { flag: ['--allow-dest', flagList(flags['allow-dest'])], file: s['allow-dest'], fallback: [] as readonly string[] });
  if (allowDests.length === 0) p.note('source-agent.allow-dest', 'none: every migration is refused');
  const metrics = p.pick('source-agent.metrics', { flag: ['--metrics', flagHostPort('metrics', flags.metrics)], file: s.metrics, fallback: undefined }, showHostPort);
  const tls = pickSecurity(p, 'source-agent', flags, file, env, false);
  return { file: file.path, socket, socketGroup, allowDests, metrics, tls, ...pickShared(p, file, env, true), settings: p.settings };
}

/**
 * The agent's TLS settings in the flags' shape. Plaintext sets aside the file's TLS settings ([tls] serves
 * both agents; one agent in plaintext does not make the other's files a mistake), but not the flags': given
 * together with --insecure they are refused as before.
 */
function pickSecurity(p: Picker, agent: 'dest-agent' | 'source-agent', flags: TlsFlagValues, file: AgentConfigFile, env: NodeJS.ProcessEnv, listens: boolean): TlsFlagValues {
  const table = file.values[agent];
  const insecure = p.pick(`${agent}.insecure`, { flag: ['--insecure', flags.insecure], file: table.insecure, fallback: false });
  const insecureAnyAddress = listens
    ? p.pick(`${agent}.insecure-any-address`, { flag: ['--insecure-any-address', flags['insecure-any-address']], file: file.values['dest-agent']['insecure-any-address'], fallback: false })
    : undefined;
  const allowPeers = p.pick(`${agent}.allow-peer`, { flag: ['--allow-peer', flagList(flags['allow-peer'])], file: insecure ? undefined : table['allow-peer'], fallback: undefined });
  if (insecure) p.note(`${agent}.insecure`, "plaintext: the file's [tls] and allow-peer are not used");
  else if (listens && allowPeers === undefined) p.note(`${agent}.allow-peer`, 'required with TLS: the agent refuses to start without it');
  // The files TLS would use, shown even when this agent is in plaintext ([tls] serves both agents).
  // FERRY_TLS_DIR is no layer of these: it names the directory of the files that nothing else names.
  const defaults = tlsFilesFrom({}, env);
  const tlsFile = (name: 'cert' | 'key' | 'ca', flag: string | undefined, dflt: string): string | undefined => {
    const named = p.pick(`tls.${name}`, { flag: [`--tls-${name}`, flag], file: file.values.tls[name], fallback: undefined });
    if (named === undefined) {
      const s = p.settings.at(-1)!;
      s.value = dflt;
      if (env.FERRY_TLS_DIR) [s.from, s.by] = ['env', 'FERRY_TLS_DIR'];
    }
    // Plaintext sets the file's aside; a flag's stays, for compileTransportSecurity to refuse with --insecure.
    return insecure && flag === undefined ? undefined : named;
  };
  const cert = tlsFile('cert', flags['tls-cert'], defaults.certFile);
  const key = tlsFile('key', flags['tls-key'], defaults.keyFile);
  const ca = tlsFile('ca', flags['tls-ca'], defaults.caFile);
  return { 'tls-cert': cert, 'tls-key': key, 'tls-ca': ca, 'allow-peer': allowPeers, insecure, 'insecure-any-address': insecureAnyAddress, 'insecure-listen': flags['insecure-listen'] };
}

function pickShared(p: Picker, file: AgentConfigFile, env: NodeJS.ProcessEnv, withPaths: true): SharedSettings & { environment: SourceEnvironment };
function pickShared(p: Picker, file: AgentConfigFile, env: NodeJS.ProcessEnv, withPaths: false): SharedSettings;
function pickShared(p: Picker, file: AgentConfigFile, env: NodeJS.ProcessEnv, withPaths: boolean): SharedSettings & { environment?: SourceEnvironment } {
  const { log, paths, criu } = file.values;
  const envLevel = (LOG_LEVELS as readonly string[]).includes(env.FERRY_LOG_LEVEL ?? '') ? (env.FERRY_LOG_LEVEL as LogLevelSetting) : undefined;
  const envFormat = (LOG_FORMATS as readonly string[]).includes(env.FERRY_LOG_FORMAT ?? '') ? (env.FERRY_LOG_FORMAT as LogFormatSetting) : undefined;
  p.pick('log.level', { env: ['FERRY_LOG_LEVEL', envLevel], file: log.level, fallback: 'info' });
  p.pick('log.format', { env: ['FERRY_LOG_FORMAT', envFormat], file: log.format, fallback: 'auto' });
  const shared: SharedSettings & { environment?: SourceEnvironment } = { log: { level: log.level ?? 'info', format: log.format ?? 'auto' }, criuPath: criu.path };
  if (withPaths) {
    // readSourceEnvironment decides (and validates FERRY_DUMP); the rows only say which layer won.
    const environment = readSourceEnvironment(env, pathsOf(file.values));
    const envImages = setInEnvironment(env, 'FERRY_IMAGES_DIR') ? environment.imagesRoot : undefined;
    const envState = setInEnvironment(env, 'FERRY_STATE_DIR') ? environment.stateDir : undefined;
    p.pick('paths.images-dir', { env: ['FERRY_IMAGES_DIR', envImages], file: paths['images-dir'], fallback: environment.imagesRoot });
    p.pick('paths.state-dir', { env: ['FERRY_STATE_DIR', envState], file: paths['state-dir'], fallback: environment.stateDir });
    shared.environment = environment;
  }
  p.pick('criu.path', { env: ['FERRY_CRIU', env.FERRY_CRIU || undefined], file: criu.path, fallback: undefined });
  if (!env.FERRY_CRIU && !criu.path) p.note('criu.path', 'found or provisioned by scripts/provision-criu.sh');
  return shared;
}

/**
 * What `ferry migrate` in this process (and `--resume`) takes from the host's config file: [paths], so that
 * its journals are where the source agent's resolver looks and its dumps where the agent sweeps, and [criu],
 * so that it runs the agents' criu. Applies the criu path (useConfiguredCriu) and returns the paths.
 */
export function applyHostConfig(env: NodeJS.ProcessEnv = process.env): SourceEnvironment {
  const values = loadAgentConfig(undefined, env).values;
  useConfiguredCriu(values.criu.path);
  return readSourceEnvironment(env, pathsOf(values));
}

function pathsOf(values: AgentConfigValues): SourcePathsConfig {
  return { imagesDir: values.paths['images-dir'], stateDir: values.paths['state-dir'] };
}
