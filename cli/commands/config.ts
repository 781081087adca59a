/**
 * `ferry config check [--config FILE] [--json]`: validates the agents' config file as an agent's start would
 * (every problem listed, exit 2) and prints the settings both agents would run with, and where each comes
 * from: env (a FERRY_* variable), file or default (the agents' flags, when given, override them all).
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { DEFAULT_CONFIG_FILE } from '../../shared/config/config-file.js';
import { parse } from '../args.js';
import { compileDestAgentConfig, compileSourceAgentConfig, loadAgentConfig, type Setting } from '../config/agent-config.js';
import { CONFIG_FLAG } from '../config/config-flag.js';
import { EXIT } from '../exit-codes.js';
import { groupId } from '../socket-group.js';

export const CONFIG_HELP = `Usage: ferry config check [--config FILE] [--json]

Validates the agents' config file (--config FILE, else $FERRY_CONFIG, else ${DEFAULT_CONFIG_FILE} if it
exists) as \`ferry dest-agent\` and \`ferry source-agent\` do at start, and prints the settings each would
run with and where each comes from: env (a FERRY_* variable), file, or default. An agent's flags override
all three. Run it before \`systemctl restart\`.

Exit codes: 0 valid (or no file at the default path); 2 invalid (CONFIG_INVALID, FERRY-0030, every problem
in the detail), or a named file missing.

Options:
  --config FILE   the file to check
  --json          one JSON object: {"ok":true,"file":...,"settings":[{"key","value","from","by","note"}]}
  -h, --help      this help`;

export function configCommand(argv: string[]): Promise<number> {
  return Promise.resolve(checkConfig(argv));
}

function checkConfig(argv: string[]): number {
  const { values, positionals } = parse(argv, { ...CONFIG_FLAG, json: { type: 'boolean' } }, true);
  if (values.help) {
    console.log(CONFIG_HELP);
    return EXIT.ok;
  }
  if (positionals.length !== 1 || positionals[0] !== 'check') {
    throw new FerryError('BAD_ARGUMENT', { message: `ferry config takes one subcommand, check${positionals[0] ? ` (got "${positionals[0].slice(0, 32)}")` : ''}`, hint: 'Usage: ferry config check [--config FILE] [--json]' });
  }
  const file = loadAgentConfig(values.config);
  const source = compileSourceAgentConfig({}, file);
  const settings = effectiveSettings([...compileDestAgentConfig({}, file).settings, ...source.settings]);
  // The agent resolves its group at start (a dest host need not have it): here it is only a note.
  if (source.socketGroup !== undefined) {
    try {
      groupId(source.socketGroup);
    } catch (e) {
      settings.find((x) => x.key === 'source-agent.socket-group')!.note = `${(e as Error).message}: the source agent would not start on this host`;
    }
  }
  if (values.json) console.log(JSON.stringify({ ok: true, file: file.path ?? null, settings }));
  else console.log(describe(file.path, values.config, settings));
  return EXIT.ok;
}

/** Each key once (both agents compile [tls], [log] and [criu] alike without flags), in table order. */
function effectiveSettings(all: readonly Setting[]): Setting[] {
  const seen = new Map<string, Setting>();
  for (const s of all) if (!seen.has(s.key)) seen.set(s.key, s);
  const order = ['dest-agent', 'source-agent', 'tls', 'log', 'paths', 'criu'];
  return [...seen.values()].sort((a, b) => order.indexOf(table(a.key)) - order.indexOf(table(b.key)));
}

function table(key: string): string {
  return key.slice(0, key.indexOf('.'));
}

function describe(path: string | undefined, named: string | undefined, settings: readonly Setting[]): string {
  const lines = [path ? `${path}: valid` : `no config file (${named ?? process.env.FERRY_CONFIG ?? DEFAULT_CONFIG_FILE} absent): flags, FERRY_* variables and defaults only`];
  const width = Math.max(...settings.map((s) => s.key.length - table(s.key).length));
  const valueWidth = Math.min(40, Math.max(...settings.map((s) => show(s.value).length)));
  let current = '';
  for (const s of settings) {
    if (table(s.key) !== current) {
      current = table(s.key);
      lines.push('', `[${current}]`);
    }
    const from = s.from === 'env' ? `env ${s.by}` : s.from;
    const note = s.note ? `  (${s.note})` : '';
    lines.push(`  ${s.key.slice(current.length + 1).padEnd(width)} ${show(s.value).padEnd(valueWidth)}  ${from}${note}`);
  }
  return lines.join('\n');
}

function show(v: Setting['value']): string {
  if (v === null) return '-';
  if (Array.isArray(v)) return v.length === 0 ? '[]' : v.join(', ');
  return String(v);
}
