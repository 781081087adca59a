/**
 * How an agent logs, compiled once from the environment and its defaults: the lowest level written, the
 * format, and whether the text format may colour. A value that is not one Ferry knows is refused with a
 * code at the start (a typo must not silently turn the logs off, or into a format journald cannot parse).
 */
import { FerryError } from '../errors/ferry-error.js';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevelSetting = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text', 'auto'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogOptions {
  /** When FERRY_LOG_LEVEL is unset (or empty). */
  defaultLevel?: string;
  /** When FERRY_LOG_FORMAT is unset (or empty). Default auto. */
  defaultFormat?: string;
  /** Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Whether the lines go to a terminal; default: whether stderr is one. */
  isTTY?: boolean;
}

export interface CompiledLogOptions {
  level: LogLevelSetting;
  format: 'json' | 'text';
  /** Text on a terminal only, and never with NO_COLOR set (https://no-color.org). */
  colour: boolean;
}

function pick<T extends string>(allowed: readonly T[], given: string | undefined, fallback: string, what: string, key: 'LOG_LEVEL_INVALID' | 'LOG_FORMAT_INVALID'): T {
  const set = given?.trim() ? given : undefined;
  const value = (set ?? fallback).trim().toLowerCase();
  if ((allowed as readonly string[]).includes(value)) return value as T;
  const from = set === undefined ? `the default ${what}` : `FERRY_LOG_${what.toUpperCase()}`;
  // JSON.stringify: a value with control characters or 10 KiB of junk stays one readable, short line.
  throw new FerryError(key, { message: `${from} ${JSON.stringify(value.slice(0, 40))} is not one of ${allowed.join(', ')}` });
}

export function compileLogOptions(o: LogOptions = {}): CompiledLogOptions {
  const env = o.env ?? process.env;
  const level = pick(LOG_LEVELS, env.FERRY_LOG_LEVEL, o.defaultLevel ?? 'info', 'level', 'LOG_LEVEL_INVALID');
  const format = pick(LOG_FORMATS, env.FERRY_LOG_FORMAT, o.defaultFormat ?? 'auto', 'format', 'LOG_FORMAT_INVALID');
  const tty = o.isTTY ?? process.stderr.isTTY === true;
  const resolved = format === 'auto' ? (tty ? 'text' : 'json') : format;
  const noColor = env.NO_COLOR !== undefined && env.NO_COLOR !== '';
  return { level, format: resolved, colour: resolved === 'text' && tty && !noColor };
}
