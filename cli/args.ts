/** Flag parsing shared by the commands: node's parseArgs, with every mistake turned into BAD_ARGUMENT. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FerryError } from '../shared/errors/ferry-error.js';
import { parseRate } from '../shared/config/units.js';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
  } catch (e) {
    throw new FerryError('BAD_ARGUMENT', { message: (e as Error).message });
  }
}

export function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new FerryError('BAD_ARGUMENT', { message: `--${name} must be a whole number (got "${v}")` });
  return Number(v);
}

/** Durations: "300ms", "2s", "1.5s", or plain milliseconds. */
export function msFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v);
  if (!m) throw new FerryError('BAD_ARGUMENT', { message: `--${name} must be a duration like 300ms or 2s (got "${v}")` });
  const n = Number(m[1]);
  return Math.round(m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n);
}

/** Rates: "200mbit", "25MiB", "1gbit" -> bytes per second. */
export function rateFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const rate = parseRate(v);
  if (rate === undefined) throw new FerryError('BAD_ARGUMENT', { message: `--${name} must be a rate like 200mbit or 25MiB (got "${v}")` });
  return rate;
}
