/**
 * The text format of a log record, for a human at a terminal (FERRY_LOG_FORMAT=text, or auto on a TTY):
 *
 *   HH:MM:SS.mmm LEVEL side   migration-id[:8] phase/round msg key=value ...
 *
 * The same fields as the JSON line, in the same bounds; the time is local (the operator's clock), a missing
 * column is "-", and a stack (of an unexpected error) follows on indented lines. Colours only when told.
 */
type LogFields = Record<string, unknown>;

const HEAD = new Set(['ts', 'level', 'msg', 'side', 'migrationId', 'phase', 'round']);

const ANSI = { reset: '\x1b[0m', dim: '\x1b[2m', red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m', cyan: '\x1b[36m' };
const LEVEL_COLOUR: Record<string, string> = { debug: ANSI.dim, info: ANSI.green, warn: ANSI.yellow, error: ANSI.red };

function clock(ts: unknown): string {
  const d = typeof ts === 'string' ? new Date(ts) : new Date();
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** Bare when it cannot be misread (no space, quote or '='), JSON-quoted otherwise; objects as JSON. */
function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v === null || typeof v !== 'object') return String(v);
  return JSON.stringify(v);
}

/** `record` is already bounded (the logger's replacer ran over it). */
export function textLine(record: LogFields, colour: boolean): string {
  const paint = (c: string, s: string): string => (colour ? `${c}${s}${ANSI.reset}` : s);
  const level = typeof record.level === 'string' ? record.level : 'info';
  const id = typeof record.migrationId === 'string' ? record.migrationId.slice(0, 8) : '-';
  const where = record.phase === undefined ? '-' : record.round === undefined ? value(record.phase) : `${value(record.phase)}/${value(record.round)}`;
  const parts = [
    paint(ANSI.dim, clock(record.ts)),
    paint(LEVEL_COLOUR[level] ?? '', level.toUpperCase().padEnd(5)),
    (record.side === undefined ? '-' : value(record.side)).padEnd(6),
    paint(ANSI.cyan, id.padEnd(8)),
    where,
    typeof record.msg === 'string' ? record.msg : '',
  ];
  let stack: string | undefined;
  for (const [k, v] of Object.entries(record)) {
    if (HEAD.has(k) || v === undefined) continue;
    if (k === 'err' && v !== null && typeof v === 'object') {
      const { message, stack: s, code: _lifted, ...rest } = v as LogFields;
      parts.push(`${paint(ANSI.dim, 'err=')}${value(message ?? '')}`);
      for (const [ek, ev] of Object.entries(rest)) if (ev !== undefined && ek !== 'name') parts.push(`${paint(ANSI.dim, `err.${ek}=`)}${value(ev)}`);
      if (typeof s === 'string') stack = s;
      continue;
    }
    parts.push(`${paint(ANSI.dim, `${k}=`)}${value(v)}`);
  }
  const line = parts.join(' ');
  return stack === undefined ? line : `${line}\n${stack.replace(/^/gm, '    ')}`;
}
