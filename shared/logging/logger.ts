/**
 * Structured logs on stderr: one JSON object per line (journald and files), or one text line for a human at a
 * terminal (log-options.ts: FERRY_LOG_LEVEL, FERRY_LOG_FORMAT, NO_COLOR). The fields (docs/operations.md, Logs):
 *
 *   ts level msg side migrationId phase round code err ...
 *
 * in that order, the first three always. `phase` and `round` come from a context read at each line
 * (withContext): the state machine that knows them feeds them, the call sites never pass them.
 * Never page contents (a Buffer is logged as its length) and never a secret: a field named like one, PEM key
 * material and a URL's password are replaced (paths to key files are fine). Every string is cut to 1 KiB (a
 * stack to 4 KiB) and every list to 64 entries: a peer's 100,000-character name or 2,000,000 pids must not
 * become the agent's log.
 */
import { MAX_DETAIL_BYTES, truncateText } from '../bounded-text.js';
import { compileLogOptions, type CompiledLogOptions, type LogFormat, type LogLevelSetting } from './log-options.js';
import { textLine } from './text-line.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevelSetting, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export type LogFields = Record<string, unknown>;

/** Fields read when a line is written (the phase and round of now, not of when the logger was made). */
export type LogContext = () => LogFields;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** These fields on every line (over the parent's). */
  child(fields: LogFields): Logger;
  /** `context()`'s fields on every line, read at each line (over the parent's; a line's own fields win). */
  withContext(context: LogContext): Logger;
}

export type LogSink = (line: string) => void;

/** The layers of a logger, oldest first: static fields (child) and contexts (withContext). */
type Layer = LogFields | LogContext;

/**
 * `defaultLevel` applies when FERRY_LOG_LEVEL is unset: daemons log at info; the CLI, which renders what
 * the operator needs itself, stays silent unless asked. `format` likewise when FERRY_LOG_FORMAT is unset
 * (default auto: text when stderr is a terminal, JSON otherwise). A bad value of either (the variable, or
 * the argument: a config file's) is a FerryError (LOG_LEVEL_INVALID, LOG_FORMAT_INVALID). Without `sink`
 * the lines go to stderr.
 */
export function createLogger(base: LogFields, sink?: LogSink, defaultLevel: LogLevelSetting = 'info', format?: LogFormat): Logger {
  // auto asks whether stderr is a terminal only when the lines go there: a test's sink gets JSON.
  const options = compileLogOptions({ defaultLevel, defaultFormat: format, isTTY: sink ? false : process.stderr.isTTY === true });
  return loggerFrom(options, base, sink ?? ((l) => process.stderr.write(l + '\n')));
}

/** A logger of options compiled already (tests give the environment and the terminal themselves). */
export function loggerFrom(options: CompiledLogOptions, base: LogFields, sink: LogSink): Logger {
  return make(options, [base], sink);
}

function make(options: CompiledLogOptions, layers: readonly Layer[], sink: LogSink): Logger {
  const min = ORDER[options.level];
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (ORDER[level] < min) return;
    // The documented order first (JSON.stringify drops what stays undefined), then the rest as given.
    const record: LogFields = { ts: undefined, level: undefined, msg: undefined, side: undefined, migrationId: undefined, phase: undefined, round: undefined, code: undefined };
    for (const layer of layers) Object.assign(record, typeof layer === 'function' ? readContext(layer) : layer);
    Object.assign(record, fields);
    // Never overridden by a field of the same name.
    record.ts = new Date().toISOString();
    record.level = level;
    record.msg = msg;
    if (fields?.err instanceof Error) record.err = describeError(fields.err);
    // The error's Ferry code at the top, where `jq 'select(.code == "FERRY-3104")'` finds it.
    record.code ??= codeOf(record.err);
    const line = JSON.stringify(record, bounded);
    sink(options.format === 'json' ? line : textLine(JSON.parse(line) as LogFields, options.colour));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => make(options, [...layers, fields], sink),
    withContext: (context) => make(options, [...layers, context], sink),
  };
}

/** A context that throws must not take the line (or the migration) with it. */
function readContext(context: LogContext): LogFields {
  try {
    return context();
  } catch (e) {
    return { contextError: String(e) };
  }
}

/** A Ferry code only (FERRY-3104): an errno's ENOENT stays inside err. */
function codeOf(err: unknown): string | undefined {
  const code = err !== null && typeof err === 'object' ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^FERRY-\d{4}$/.test(code) ? code : undefined;
}

const MAX_STACK_BYTES = 4 * MAX_DETAIL_BYTES;
const MAX_LIST_ENTRIES = 64;
/** Field names whose values are secrets whatever they hold. Paths to key files are named keyPath, --tls-key: fine. */
const SECRET_NAME = /passw|passphrase|secret|token|credential|authorization|private_?key|key_?material/i;
const PEM_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g;
const URL_PASSWORD = /(\/\/[^/\s:@]+:)[^/\s@]+@/g;

/** The JSON replacer that keeps a line bounded and free of page bytes and secrets (and a bigint printable). */
function bounded(this: unknown, key: string, value: unknown): unknown {
  // The holder's own value: JSON.stringify has already turned a Buffer into {type, data} by now.
  const original = key === '' ? value : (this as Record<string, unknown>)[key];
  if (original instanceof Uint8Array) return `<${original.length} bytes>`;
  if (key !== '' && SECRET_NAME.test(key) && value !== undefined && value !== null && value !== '') return '[redacted]';
  if (typeof value === 'string') {
    const clean = value.includes('PRIVATE KEY') || value.includes('@') ? value.replace(PEM_KEY, '[redacted key material]').replace(URL_PASSWORD, '$1***@') : value;
    return truncateText(clean, key === 'stack' ? MAX_STACK_BYTES : MAX_DETAIL_BYTES);
  }
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value) && value.length > MAX_LIST_ENTRIES) return [...value.slice(0, MAX_LIST_ENTRIES), `... ${value.length - MAX_LIST_ENTRIES} more`];
  return value;
}

function describeError(e: Error): LogFields {
  const out: LogFields = { name: e.name, message: e.message };
  const fe = e as Error & { code?: unknown; detail?: unknown };
  if (fe.code !== undefined) out.code = fe.code;
  if (fe.detail !== undefined) out.detail = fe.detail;
  // A FerryError is expected and explained by its code; a stack only helps for the unexpected.
  if (e.stack && e.name !== 'FerryError') out.stack = e.stack;
  return out;
}

export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
  withContext: () => silentLogger,
};
