/**
 * The agents' config file: which file, its bounds, the TOML parser's errors, every kind of problem the schema
 * finds (with its code, dotted key and line), the precedence flag > FERRY_* > file > default, list
 * replacement, and the shipped example, which must stay valid and name every key.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { AGENT_CONFIG_SCHEMA } from '../../cli/config/agent-config-schema.js';
import { applyHostConfig, compileDestAgentConfig, compileSourceAgentConfig, loadAgentConfig, type AgentConfigFile, type Setting } from '../../cli/config/agent-config.js';
import { main } from '../../cli/main.js';
import { chooseConfigFile, DEFAULT_CONFIG_FILE, keyLines, MAX_CONFIG_BYTES, readConfigDocument } from '../../shared/config/config-file.js';
import { nearestName } from '../../shared/config/did-you-mean.js';
import { chosenCriu, useConfiguredCriu } from '../../shared/criu/criu-binary.js';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  useConfiguredCriu(undefined);
});

let n = 0;
function file(text: string | Buffer): string {
  const path = join(dir, `f${n++}.toml`);
  writeFileSync(path, text);
  return path;
}

/** No FERRY_* variable of this process leaks into a test that did not set it. */
const NO_ENV: NodeJS.ProcessEnv = {};

function load(text: string): AgentConfigFile {
  return loadAgentConfig(file(text), NO_ENV);
}

/** Loads `text`, which must be refused; returns the error's detail lines. */
function problems(text: string): { message: string; lines: string[] } {
  const e = expectFerryError(() => load(text), 'CONFIG_INVALID');
  return { message: e.message, lines: (e.detail ?? '').split('\n') };
}

function setting(settings: readonly Setting[], key: string): Setting {
  const s = settings.find((x) => x.key === key);
  if (!s) throw new Error(`no setting ${key}`);
  return s;
}

describe('which config file', () => {
  it('takes --config, else FERRY_CONFIG, else the default path', () => {
    expect(chooseConfigFile('/a.toml', { FERRY_CONFIG: '/b.toml' })).toEqual({ path: '/a.toml', namedBy: 'flag' });
    expect(chooseConfigFile(undefined, { FERRY_CONFIG: '/b.toml' })).toEqual({ path: '/b.toml', namedBy: 'env' });
    expect(chooseConfigFile(undefined, { FERRY_CONFIG: '' })).toEqual({ path: DEFAULT_CONFIG_FILE, namedBy: 'default' });
  });

  it('is fine without a file at the default path (flags only)', () => {
    expect(readConfigDocument({ path: join(dir, 'absent.toml'), namedBy: 'default' })).toBeUndefined();
  });

  it('refuses a named file that is missing, whether named by --config or FERRY_CONFIG', () => {
    const missing = join(dir, 'missing.toml');
    expect(expectFerryError(() => loadAgentConfig(missing, NO_ENV), 'CONFIG_INVALID').message).toContain(missing);
    expectFerryError(() => loadAgentConfig(undefined, { FERRY_CONFIG: missing }), 'CONFIG_INVALID');
    expectFerryError(() => loadAgentConfig('', NO_ENV), 'CONFIG_INVALID');
  });

  it('refuses a directory, a file over the size bound and one that is not UTF-8, before parsing', () => {
    const sub = join(dir, 'a-dir.toml');
    mkdirSync(sub);
    expect(expectFerryError(() => loadAgentConfig(sub, NO_ENV), 'CONFIG_INVALID').message).toContain('not a regular file');
    // Valid TOML (one long comment): refused for its size alone.
    const big = file(`# ${'x'.repeat(MAX_CONFIG_BYTES)}\n`);
    expect(expectFerryError(() => loadAgentConfig(big, NO_ENV), 'CONFIG_INVALID').message).toContain(`${MAX_CONFIG_BYTES}`);
    expect(() => loadAgentConfig(file(`# ${'x'.repeat(MAX_CONFIG_BYTES - 10)}\n`), NO_ENV)).not.toThrow();
    expectFerryError(() => loadAgentConfig(file(Buffer.from([0x5b, 0x6c, 0x6f, 0x67, 0x5d, 0x0a, 0xff, 0xfe])), NO_ENV), 'CONFIG_INVALID');
  });
});

describe('what is wrong with a file', () => {
  it('gives a TOML syntax error with the line and column of the parser', () => {
    const { message } = problems('[log]\nlevel = "info"\nformat = \n');
    expect(message).toMatch(/\.toml:3:\d+: TOML syntax: /);
    expect(problems('[log]\nlevel = "info"\n[log]\n').message).toMatch(/\.toml:3:\d+: TOML syntax: .*redefine/);
  });

  it('names an unknown key with the near miss, and its line', () => {
    const { message } = problems('[dest-agent]\nlisten = "127.0.0.1:7070"\nwork-dri = "/srv/ferry"\n');
    expect(message).toMatch(/\.toml:3: dest-agent\.work-dri: unknown key; did you mean dest-agent\.work-dir\?$/);
  });

  it('lists the keys of the table when no key is near', () => {
    expect(problems('[log]\ncolour = "blue"\n').message).toContain('log.colour: unknown key; the keys of [log] are level, format');
  });

  it('names an unknown table with the near miss', () => {
    expect(problems('[dest_agent]\nlisten = "127.0.0.1:7070"\n').message).toMatch(/:1: dest_agent: unknown table \[dest_agent\]; did you mean \[dest-agent\]\?/);
    expect(problems('[frobnicate]\nx = 1\n').message).toContain('the tables are [dest-agent], [source-agent], [tls], [log], [paths], [criu]');
  });

  it('says where a key in the wrong table belongs', () => {
    expect(problems('[dest-agent]\nsocket = "/run/x.sock"\n').message).toContain('dest-agent.socket: not a key of [dest-agent]; it belongs in [source-agent]');
    expect(problems('[source-agent]\nstate-dir = "/srv"\n').message).toContain('it belongs in [paths]');
    expect(problems('listen = "127.0.0.1:7070"\n').message).toContain('listen: a key outside any table; it belongs in [dest-agent]');
    expect(problems('metrics = "127.0.0.1:9470"\n').message).toContain('it belongs in [dest-agent] or [source-agent]');
  });

  it("points a flag's or a variable's name at its key", () => {
    expect(problems('[dest-agent]\ntls-cert = "/etc/ferry/tls/cert.pem"\n').message).toContain('dest-agent.tls-cert: not a key of [dest-agent]; in the file it is cert in [tls]');
    expect(problems('FERRY_STATE_DIR = "/srv"\n').message).toContain('in the file it is state-dir in [paths]');
  });

  it('refuses a wrong type, naming the type expected and the one found', () => {
    expect(problems('[source-agent]\nmetrics = 9471\n').message).toContain('source-agent.metrics: must be a string (got an integer)');
    expect(problems('[dest-agent]\ninsecure = "yes"\n').message).toContain('dest-agent.insecure: must be a boolean (true or false) (got a string "yes")');
    expect(problems('[dest-agent]\nallow-peer = "spiffe://d/ferry/a"\n').message).toContain('must be an array of strings (got a string');
    expect(problems('[source-agent]\nallow-dest = ["10.0.0.2:7070", 7070]\n').message).toContain('(item 2 is an integer)');
    expect(problems('log = "debug"\n').message).toContain('log: must be a table');
  });

  it("refuses a bad value with the flag's own parser, naming the key", () => {
    expect(problems('[dest-agent]\nlisten = "nohostport"\n').message).toMatch(/:2: dest-agent\.listen: The address "nohostport" is not HOST:PORT/);
    expect(problems('[source-agent]\nallow-dest = ["10.0.0.2:0"]\n').message).toContain('source-agent.allow-dest: The address "10.0.0.2:0" is not HOST:PORT');
    expect(problems('[dest-agent]\nallow-peer = ["spiffe://"]\n').message).toContain('dest-agent.allow-peer: entry "spiffe://" is not an identity');
    expect(problems('[log]\nlevel = "loud"\n').message).toContain('log.level: must be one of debug, info, warn, error, silent (got "loud")');
    expect(problems('[log]\nformat = "xml"\n').message).toContain('log.format: must be one of json, text, auto');
    expect(problems('[paths]\nstate-dir = "var/lib/ferry"\n').message).toContain('paths.state-dir: must be an absolute path');
    expect(problems('[source-agent]\nsocket-group = "no such group!"\n').message).toContain('source-agent.socket-group: "no such group!" is not a group name or number');
    // The dest's bridge goes into criu's veth[..]:..@BRIDGE: refused at start, not at the first restore.
    expect(problems('[dest-agent]\nbridge = "br@0"\n').message).toContain('dest-agent.bridge: must be an interface name: the interface name "br@0" holds a character criu cannot be given');
  });

  it("refuses a --bridge criu cannot be given (BAD_ARGUMENT), as the file's key", () => {
    expect(expectFerryError(() => compileDestAgentConfig({ listen: '127.0.0.1:0', bridge: 'br@0' }, load(''), NO_ENV), 'BAD_ARGUMENT').message).toContain('--bridge');
    expect(compileDestAgentConfig({ listen: '127.0.0.1:0', bridge: 'br-0' }, load(''), NO_ENV).bridge).toBe('br-0');
  });

  it('reports every problem of the file at once: the first in the message, all in the detail', () => {
    const { message, lines } = problems(['[dest-agent]', 'listn = "127.0.0.1:7070"', 'metrics = 1', '[log]', 'level = "loud"', '[criu]', 'path = "criu"'].join('\n'));
    expect(message).toMatch(/dest-agent\.listn: .*\(and 3 more problems\)$/);
    expect(lines.map((l) => /\.toml:(\d+): (\S+):/.exec(l)?.slice(1))).toEqual([
      ['2', 'dest-agent.listn'],
      ['3', 'dest-agent.metrics'],
      ['5', 'log.level'],
      ['7', 'criu.path'],
    ]);
  });

  it('refuses keys that would reach an object prototype', () => {
    problems('[log]\n__proto__ = "x"\n');
  });
});

describe('where each key is written', () => {
  it('maps headers, bare, quoted and dotted keys to their lines', () => {
    const lines = keyLines('# c\n[dest-agent]\nlisten = "x"\n "work-dir" = "y"\n[ "log" ]\nlevel="z"\ntls.cert = "w"\n');
    expect(Object.fromEntries(lines)).toEqual({ 'dest-agent': 2, 'dest-agent.listen': 3, 'dest-agent.work-dir': 4, log: 5, 'log.level': 6, 'log.tls.cert': 7 });
  });

  it('finds a near miss, and nothing for a far one', () => {
    expect(nearestName('listn', ['listen', 'metrics'])).toBe('listen');
    expect(nearestName('lsiten', ['listen'])).toBe('listen');
    expect(nearestName('port', ['listen', 'metrics'])).toBeUndefined();
  });
});

describe('precedence: flag > FERRY_* > file > default', () => {
  const text = [
    '[dest-agent]',
    'listen = "127.0.0.1:7070"',
    'work-dir = "/srv/ferry/dest"',
    'allow-peer = ["spiffe://d/ferry/a", "spiffe://d/ferry/b"]',
    '[source-agent]',
    'allow-dest = ["10.0.0.2:7070", "10.0.0.3:7070"]',
    '[log]',
    'level = "debug"',
    '[paths]',
    'state-dir = "/srv/ferry/state"',
    '[criu]',
    'path = "/opt/criu/bin/criu"',
  ].join('\n');

  it('takes a flag over the file, and the file over the default', () => {
    const f = load(text);
    const c = compileDestAgentConfig({ listen: '127.0.0.1:0' }, f, NO_ENV);
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 0 });
    expect(setting(c.settings, 'dest-agent.listen')).toMatchObject({ value: '127.0.0.1:0', from: 'flag', by: '--listen' });
    expect(c.workDir).toBe('/srv/ferry/dest');
    expect(setting(c.settings, 'dest-agent.work-dir')).toMatchObject({ from: 'file', by: f.path });
    expect(c.metrics).toBeUndefined();
    expect(setting(c.settings, 'dest-agent.metrics')).toMatchObject({ value: null, from: 'default' });
    // Without the file, the built-in defaults.
    const bare = compileDestAgentConfig({}, load(''), NO_ENV);
    expect(bare.workDir).toBe('/var/lib/ferry/dest');
    expect(bare.listen).toBeUndefined();
  });

  it('takes a FERRY_* variable over the file, and the file over the default', () => {
    const f = load(text);
    const env = { FERRY_STATE_DIR: '/env/state', FERRY_LOG_LEVEL: 'warn', FERRY_CRIU: '/env/criu' };
    const c = compileSourceAgentConfig({}, f, env);
    expect(c.environment.stateDir).toBe('/env/state');
    expect(setting(c.settings, 'paths.state-dir')).toMatchObject({ value: '/env/state', from: 'env', by: 'FERRY_STATE_DIR' });
    expect(setting(c.settings, 'log.level')).toMatchObject({ value: 'warn', from: 'env', by: 'FERRY_LOG_LEVEL' });
    expect(setting(c.settings, 'criu.path')).toMatchObject({ value: '/env/criu', from: 'env' });
    // The logger's defaultLevel is the file's: FERRY_LOG_LEVEL overrides it inside createLogger.
    expect(c.log).toEqual({ level: 'debug', format: 'auto' });
    const fileOnly = compileSourceAgentConfig({}, f, NO_ENV);
    expect(fileOnly.environment.stateDir).toBe('/srv/ferry/state');
    expect(setting(fileOnly.settings, 'paths.state-dir').from).toBe('file');
    expect(fileOnly.environment.imagesRoot).toBe('/dev/shm/ferry');
    expect(setting(fileOnly.settings, 'paths.images-dir').from).toBe('default');
  });

  it('replaces the file’s list with a repeated list flag, and keeps it when the flag is absent', () => {
    const f = load(text);
    expect(compileSourceAgentConfig({ 'allow-dest': ['10.0.0.9:7070'] }, f, NO_ENV).allowDests).toEqual(['10.0.0.9:7070']);
    expect(compileSourceAgentConfig({}, f, NO_ENV).allowDests).toEqual(['10.0.0.2:7070', '10.0.0.3:7070']);
    const dest = compileDestAgentConfig({ 'allow-peer': ['spiffe://d/ferry/z'] }, f, NO_ENV);
    expect(dest.tls['allow-peer']).toEqual(['spiffe://d/ferry/z']);
    expect(compileDestAgentConfig({}, f, NO_ENV).tls['allow-peer']).toEqual(['spiffe://d/ferry/a', 'spiffe://d/ferry/b']);
  });

  it('takes page-channel-port from --page-channel-port over the file, 0 by default, and refuses a port out of range (issue 15)', () => {
    const f = load('[dest-agent]\npage-channel-port = 7071\n');
    expect(compileDestAgentConfig({}, f, NO_ENV).pageChannelPort).toBe(7071);
    expect(setting(compileDestAgentConfig({}, f, NO_ENV).settings, 'dest-agent.page-channel-port')).toMatchObject({ value: 7071, from: 'file' });
    expect(compileDestAgentConfig({ 'page-channel-port': '7072' }, f, NO_ENV).pageChannelPort).toBe(7072);
    expect(compileDestAgentConfig({}, load(''), NO_ENV).pageChannelPort).toBe(0);
    for (const bad of ['65536', '-1', 'x', '']) expectFerryError(() => compileDestAgentConfig({ 'page-channel-port': bad }, load(''), NO_ENV), 'BAD_ARGUMENT');
    expect(problems('[dest-agent]\npage-channel-port = 70000\n').message).toMatch(/page-channel-port/);
  });

  it("checks a flag with the flag's parser and code, as before", () => {
    expectFerryError(() => compileDestAgentConfig({ listen: 'nope' }, load(text), NO_ENV), 'BAD_ADDRESS');
  });

  it("sets the file's TLS aside for an agent in plaintext, but not the flags'", () => {
    const f = load('[dest-agent]\ninsecure = true\nallow-peer = ["spiffe://d/ferry/a"]\n[tls]\ncert = "/etc/x/cert.pem"\n');
    const c = compileDestAgentConfig({}, f, NO_ENV);
    expect(c.tls).toMatchObject({ insecure: true, 'tls-cert': undefined, 'allow-peer': undefined });
    expect(compileDestAgentConfig({ 'tls-cert': '/flag/cert.pem' }, f, NO_ENV).tls['tls-cert']).toBe('/flag/cert.pem');
    // The source agent of the same file still uses [tls].
    expect(compileSourceAgentConfig({}, f, NO_ENV).tls['tls-cert']).toBe('/etc/x/cert.pem');
  });

  it('shows the TLS files an agent reads when nothing names them: FERRY_TLS_DIR, else /etc/ferry/tls', () => {
    const f = load('');
    expect(setting(compileDestAgentConfig({}, f, NO_ENV).settings, 'tls.key')).toMatchObject({ value: '/etc/ferry/tls/key.pem', from: 'default' });
    expect(setting(compileDestAgentConfig({}, f, { FERRY_TLS_DIR: '/tlsdir' }).settings, 'tls.key')).toMatchObject({ value: '/tlsdir/key.pem', from: 'env', by: 'FERRY_TLS_DIR' });
  });

  it("puts [criu] path below FERRY_CRIU, and [paths] where ferry migrate and --resume look", () => {
    const path = file('[criu]\npath = "/opt/criu/bin/criu"\n[paths]\nstate-dir = "/srv/ferry/state"\n');
    const env = applyHostConfig({ FERRY_CONFIG: path });
    expect(env.stateDir).toBe('/srv/ferry/state');
    expect(chosenCriu({})).toBe('/opt/criu/bin/criu');
    expect(chosenCriu({ FERRY_CRIU: '/env/criu' })).toBe('/env/criu');
    expect(applyHostConfig({ FERRY_CONFIG: path, FERRY_STATE_DIR: '/env/state' }).stateDir).toBe('/env/state');
  });
});

describe('deploy/ferry.toml.example', () => {
  const example = join(REPO_ROOT, 'deploy', 'ferry.toml.example');

  it('passes `ferry config check`', async () => {
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(await main(['config', 'check', '--config', example, '--json'])).toBe(0);
    const report = JSON.parse(out.join('\n')) as { ok: boolean; file: string; settings: Setting[] };
    expect(report.ok).toBe(true);
    expect(setting(report.settings, 'dest-agent.listen')).toMatchObject({ value: '10.0.0.2:7070', from: 'file' });
  });

  it('names every key of the schema (set, or commented out as `# key = ...`)', () => {
    const uncommented = readFileSync(example, 'utf8').replace(/^# ([a-z-]+ = )/gm, '$1');
    const written = new Set(keyLines(uncommented).keys());
    const all = Object.entries(AGENT_CONFIG_SCHEMA).flatMap(([table, keys]) => Object.keys(keys).map((k) => `${table}.${k}`));
    expect(all.filter((k) => !written.has(k))).toEqual([]);
  });

  it('matches the systemd units: the same addresses, peers and paths', () => {
    const units = ['ferry-dest-agent.service', 'ferry-source-agent.service'].map((u) => readFileSync(join(REPO_ROOT, 'deploy', 'systemd', u), 'utf8')).join('\n');
    const f = loadAgentConfig(example, NO_ENV).values;
    const flagged = (name: string): string[] => [...units.matchAll(new RegExp(`--${name}[ =](\\S+)`, 'g'))].map((m) => m[1]!);
    // Only where a unit still gives the flag (units that read the file give none).
    for (const [flag, value] of [
      ['listen', '10.0.0.2:7070'],
      ['work-dir', f['dest-agent']['work-dir']],
      ['socket', f['source-agent'].socket],
      ['socket-group', f['source-agent']['socket-group']],
    ] as const) {
      for (const v of flagged(flag)) expect(v, `--${flag}`).toBe(value);
    }
  });
});

describe('ferry config check', () => {
  it('exits 2 with CONFIG_INVALID and every problem in its JSON error', async () => {
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(await main(['config', 'check', '--config', file('[dest-agent]\nlistn = "x"\n[log]\nlevel = 3\n'), '--json'])).toBe(2);
    const { error } = JSON.parse(out.join('\n')) as { error: { code: string; detail: string } };
    expect(error.code).toBe('FERRY-0030');
    expect(error.detail.split('\n')).toHaveLength(2);
  });

  it('refuses a subcommand other than check', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(await main(['config', 'show'])).toBe(2);
  });
});
