/**
 * Structured logs: one JSON object per line on stderr, carrying side, migration id, phase and round.
 * Never page contents. FERRY_LOG_LEVEL=debug|info|warn|error|silent (default info).
 * Every string is cut to 1 KiB (a stack to 4 KiB) and every list to 64 entries: a peer's 100,000-character
 * name or 2,000,000 pids must not become the agent's log.
 */
import { MAX_DETAIL_BYTES, truncateText } from '../bounded-text.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export type LogSink = (line: string) => void;

function threshold(fallback: LogLevel | 'silent'): number {
  const env = process.env.FERRY_LOG_LEVEL as LogLevel | 'silent' | undefined;
  return ORDER[env && env in ORDER ? env : fallback];
}

/**
 * `defaultLevel` applies when FERRY_LOG_LEVEL is unset: daemons log at info; the CLI, which renders what
 * the operator needs itself, stays silent unless asked.
 */
export function createLogger(
  base: LogFields,
  sink: LogSink = (l) => process.stderr.write(l + '\n'),
  defaultLevel: LogLevel | 'silent' = 'info',
): Logger {
  const min = threshold(defaultLevel);
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (ORDER[level] < min) return;
    const record: LogFields = { ts: new Date().toISOString(), level, ...base, msg, ...fields };
    if (fields?.err instanceof Error) record.err = describeError(fields.err);
    sink(JSON.stringify(record, bounded));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, sink, defaultLevel),
  };
}

const MAX_STACK_BYTES = 4 * MAX_DETAIL_BYTES;
const MAX_LIST_ENTRIES = 64;

/** The JSON replacer that keeps a line bounded (and a bigint printable). */
function bounded(key: string, value: unknown): unknown {
  if (typeof value === 'string') return truncateText(value, key === 'stack' ? MAX_STACK_BYTES : MAX_DETAIL_BYTES);
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
};
