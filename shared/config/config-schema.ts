/**
 * Checks a parsed TOML document against a schema of tables and keys, collecting every problem: an unknown
 * table or key (with the near miss it was probably meant to be, or the table it belongs in), a wrong type, a
 * bad value (each key's own parser, the one its flag uses, throws a FerryError whose message is kept).
 */
import type { TomlTable } from 'smol-toml';
import { FerryError } from '../errors/ferry-error.js';
import type { ConfigProblem } from './config-problems.js';
import { nearestName } from './did-you-mean.js';

export type FieldKind = 'string' | 'integer' | 'boolean' | 'string-list';

export type FieldValue = string | number | boolean | readonly string[];

export interface FieldSpec<T> {
  /** The TOML types the key takes. */
  readonly kinds: readonly FieldKind[];
  /** Checks and converts a value of one of those types; throws a FerryError on a bad one. `key` is dotted. */
  readonly parse: (value: FieldValue, key: string) => T;
}

export type ConfigSchema = Readonly<Record<string, Readonly<Record<string, FieldSpec<unknown>>>>>;

/** What a valid file holds: every key optional, with its parsed type. */
export type ConfigValues<S extends ConfigSchema> = {
  -readonly [T in keyof S]: { -readonly [K in keyof S[T]]?: S[T][K] extends FieldSpec<infer V> ? V : never };
};

export function field<T>(kinds: readonly FieldKind[], parse: (value: FieldValue, key: string) => T): FieldSpec<T> {
  return { kinds, parse };
}

export interface ValidateOptions {
  /** Names an operator may try that live elsewhere, e.g. the flag `tls-cert` -> `tls.cert`. */
  aliases?: Readonly<Record<string, string>>;
}

export function validateConfig<S extends ConfigSchema>(
  table: TomlTable,
  lines: ReadonlyMap<string, number>,
  schema: S,
  opts: ValidateOptions = {},
): { values: ConfigValues<S>; problems: ConfigProblem[] } {
  const values = Object.fromEntries(Object.keys(schema).map((t) => [t, {}])) as Record<string, Record<string, unknown>>;
  const problems: ConfigProblem[] = [];
  const problem = (key: string, message: string): void => {
    problems.push({ key, line: lines.get(key) ?? lines.get(key.split('.')[0]!), message });
  };
  for (const [name, value] of Object.entries(table)) {
    const keys = schema[name];
    if (keys === undefined) {
      problem(name, isTable(value) ? unknownTable(name, schema) : topLevelKey(name, schema, opts));
      continue;
    }
    if (!isTable(value)) {
      problem(name, `must be a table ([${name}] on a line of its own, its keys below it), not ${typeName(value)}`);
      continue;
    }
    for (const [key, v] of Object.entries(value)) {
      const dotted = `${name}.${key}`;
      const spec = keys[key];
      if (spec === undefined) {
        problem(dotted, unknownKey(name, key, schema, opts));
        continue;
      }
      const kindError = checkKind(v, spec.kinds);
      if (kindError) {
        problem(dotted, kindError);
        continue;
      }
      try {
        values[name]![key] = spec.parse(v as FieldValue, dotted);
      } catch (e) {
        if (!(e instanceof FerryError)) throw e;
        problem(dotted, e.message);
      }
    }
  }
  return { values: values as ConfigValues<S>, problems };
}

function isTable(v: unknown): v is TomlTable {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (isTable(v)) return 'a table';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a float';
  return `a ${typeof v}`;
}

const KIND_NAMES: Record<FieldKind, string> = { string: 'a string', integer: 'an integer', boolean: 'a boolean (true or false)', 'string-list': 'an array of strings' };

function checkKind(v: unknown, kinds: readonly FieldKind[]): string | undefined {
  const ok = kinds.some((k) => {
    if (k === 'string') return typeof v === 'string';
    if (k === 'integer') return typeof v === 'number' && Number.isSafeInteger(v);
    if (k === 'boolean') return typeof v === 'boolean';
    return Array.isArray(v);
  });
  const expected = kinds.map((k) => KIND_NAMES[k]).join(' or ');
  if (!ok) return `must be ${expected} (got ${typeName(v)}${typeof v === 'string' ? ` "${clip(v)}"` : ''})`;
  if (Array.isArray(v)) {
    const bad = v.findIndex((item) => typeof item !== 'string');
    if (bad >= 0) return `must be ${expected} (item ${bad + 1} is ${typeName(v[bad])})`;
  }
  return undefined;
}

function unknownTable(name: string, schema: ConfigSchema): string {
  const near = nearestName(name, Object.keys(schema));
  return `unknown table [${clip(name)}]${near ? `; did you mean [${near}]?` : `; the tables are ${tableList(schema)}`}`;
}

function topLevelKey(name: string, schema: ConfigSchema, opts: ValidateOptions): string {
  const homes = tablesWith(name, schema);
  if (homes.length > 0) return `a key outside any table; it belongs in ${homes.map((t) => `[${t}]`).join(' or ')}`;
  const alias = opts.aliases?.[name];
  if (alias) return `a key outside any table; in the file it is ${dottedAsToml(alias)}`;
  return `unknown key outside any table; keys go in the tables ${tableList(schema)}`;
}

function unknownKey(table: string, key: string, schema: ConfigSchema, opts: ValidateOptions): string {
  const homes = tablesWith(key, schema);
  if (homes.length > 0) return `not a key of [${table}]; it belongs in ${homes.map((t) => `[${t}]`).join(' or ')}`;
  const alias = opts.aliases?.[key];
  if (alias) return `not a key of [${table}]; in the file it is ${dottedAsToml(alias)}`;
  const keys = Object.keys(schema[table] ?? {});
  const near = nearestName(key, keys);
  return `unknown key${near ? `; did you mean ${table}.${near}?` : `; the keys of [${table}] are ${keys.join(', ')}`}`;
}

function tablesWith(key: string, schema: ConfigSchema): string[] {
  return Object.keys(schema).filter((t) => Object.hasOwn(schema[t]!, key));
}

function tableList(schema: ConfigSchema): string {
  return Object.keys(schema)
    .map((t) => `[${t}]`)
    .join(', ');
}

/** `tls.cert` -> `cert in [tls]`. */
function dottedAsToml(dotted: string): string {
  const dot = dotted.indexOf('.');
  return `${dotted.slice(dot + 1)} in [${dotted.slice(0, dot)}]`;
}

function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}...` : s;
}
