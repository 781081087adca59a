/**
 * Finding, reading and parsing the agents' TOML config file: `--config FILE`, else $FERRY_CONFIG, else
 * /etc/ferry/ferry.toml when it exists. A file that was named must be there; the default one may be absent
 * (flags only). Bounded before it is parsed, by a real TOML 1.0 parser (smol-toml); what it means is checked
 * by config-schema.ts.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parse, TomlError, type TomlTable } from 'smol-toml';
import { configInvalid } from './config-problems.js';

export const DEFAULT_CONFIG_FILE = '/etc/ferry/ferry.toml';
/** A config of every key is 2 KiB; a file 500 times that is a mistake (a log, an image), not a config. */
export const MAX_CONFIG_BYTES = 1 << 20;
/** Tables of tables at most this deep: the schema has two levels, and a deep one only costs the parser. */
const MAX_DEPTH = 8;

export type ConfigFileNamedBy = 'flag' | 'env' | 'default';

export interface ConfigFileChoice {
  path: string;
  namedBy: ConfigFileNamedBy;
}

export interface ConfigDocument {
  path: string;
  namedBy: ConfigFileNamedBy;
  table: TomlTable;
  /** The line where each dotted key (or table) is first written, for the messages. */
  lines: ReadonlyMap<string, number>;
}

/** Which file: `--config` wins, then FERRY_CONFIG (an empty one counts as unset), then the default path. */
export function chooseConfigFile(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): ConfigFileChoice {
  if (flag !== undefined) return { path: flag, namedBy: 'flag' };
  if (env.FERRY_CONFIG) return { path: env.FERRY_CONFIG, namedBy: 'env' };
  return { path: DEFAULT_CONFIG_FILE, namedBy: 'default' };
}

/** The parsed file, or undefined when the default file does not exist. Throws CONFIG_INVALID. */
export function readConfigDocument(choice: ConfigFileChoice): ConfigDocument | undefined {
  const { path, namedBy } = choice;
  const named = namedBy === 'flag' ? '--config' : 'FERRY_CONFIG';
  if (path === '') throw configInvalid('(empty path)', [{ key: '', message: `${named} names no file` }]);
  let text: string;
  try {
    text = readBounded(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && namedBy === 'default') return undefined;
    const why = code === 'ENOENT' ? `no such file (named by ${named})` : (e as Error).message;
    throw configInvalid(path, [{ key: '', message: `cannot be read: ${why}` }], e);
  }
  let table: TomlTable;
  try {
    // Keys such as __proto__ are refused rather than kept: no key of the schema looks like one.
    table = parse(text, { unsafeKeyBehaviour: 'throw', maxDepth: MAX_DEPTH });
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const message = e.message.replace(/^Invalid TOML document: /, '').split('\n')[0] ?? 'invalid';
    throw configInvalid(path, [{ key: '', line: e.line, column: e.column, message: `TOML syntax: ${message}` }], e);
  }
  return { path, namedBy, table, lines: keyLines(text) };
}

/** The file's text: a regular file of at most MAX_CONFIG_BYTES in UTF-8, checked on the open fd. */
function readBounded(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_CONFIG_BYTES) throw new Error(`${st.size} bytes, more than the ${MAX_CONFIG_BYTES} a config file may have`);
    // One byte more than allowed: a file that grew since the fstat is still caught.
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_CONFIG_BYTES) throw new Error(`more than the ${MAX_CONFIG_BYTES} bytes a config file may have`);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(0, n));
    } catch {
      throw new Error('not UTF-8 text');
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Where each key is written: `[table]` headers and `key =` lines, bare or quoted, dotted or not. A scan of
 * lines, not a second parser: it serves the messages only (a key it misses is reported without a line).
 */
export function keyLines(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  let table = '';
  text.split(/\r?\n/).forEach((raw, i) => {
    const header = /^\s*\[\[?\s*([^[\]]+?)\s*\]\]?\s*(?:#.*)?$/.exec(raw);
    const assignment = header ? null : /^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=/.exec(raw);
    if (header) table = dotted(header[1]!);
    const key = header ? table : assignment ? (table ? `${table}.` : '') + dotted(assignment[1]!) : undefined;
    if (key !== undefined && !lines.has(key)) lines.set(key, i + 1);
  });
  return lines;
}

function dotted(key: string): string {
  return (key.match(/"[^"]*"|'[^']*'|[^.\s]+/g) ?? []).map((part) => part.replace(/^["']|["']$/g, '')).join('.');
}
