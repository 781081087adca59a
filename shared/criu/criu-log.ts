/**
 * Quoting CRIU's log in errors: its Error lines (without the harmless ones every run prints) and the log's
 * path, as runc and podman do when CRIU fails.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

/** Error lines CRIU prints on successful runs too; they are never quoted. */
const HARMLESS_ERRORS: readonly RegExp[] = [/rlimit: Can't setup RLIMIT_NOFILE/];
const ERROR_LINE = /\bError \(/;
/** The "(00.046324) " elapsed-time prefix CRIU puts on log lines at -v3 and above. */
const TIME_PREFIX = /^\(\s*\d+\.\d+\)\s*/;
const MAX_QUOTED = 12;
/** A restore's log quotes names from the images a peer sent: a quoted line never carries more than this. */
export const MAX_QUOTED_LINE_CHARS = 300;

/** One log line as quoted: without the elapsed-time prefix, cut to MAX_QUOTED_LINE_CHARS; undefined when it is not a reportable error. */
export function quotableErrorLine(line: string): string | undefined {
  if (!ERROR_LINE.test(line) || HARMLESS_ERRORS.some((re) => re.test(line))) return undefined;
  const quoted = line.replace(TIME_PREFIX, '').trim();
  return quoted.length <= MAX_QUOTED_LINE_CHARS ? quoted : `${quoted.slice(0, MAX_QUOTED_LINE_CHARS)}... (${quoted.length - MAX_QUOTED_LINE_CHARS} more chars)`;
}

/** The reportable Error lines of a criu log, in order (the harmless RLIMIT_NOFILE line left out). */
export function criuLogErrors(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const q = quotableErrorLine(line);
    if (q !== undefined) out.push(q);
  }
  return out;
}

/** Same as `criuLogErrors`, streaming the file: a failed run's log at -v4 can be large. */
export async function readCriuLogErrors(logFile: string): Promise<string[]> {
  const out: string[] = [];
  const rl = createInterface({ input: createReadStream(logFile, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of rl) {
    const q = quotableErrorLine(line);
    if (q !== undefined) out.push(q);
  }
  return out;
}

/** The quote for an error's detail: at most MAX_QUOTED lines (the first ones and the last two), then the log path. */
export function formatQuote(lines: readonly string[], logFile: string): string[] {
  let shown: string[] = [...lines];
  if (lines.length > MAX_QUOTED) {
    shown = [...lines.slice(0, MAX_QUOTED - 2), `... ${lines.length - MAX_QUOTED} more Error lines ...`, ...lines.slice(-2)];
  }
  return [...shown.map((l) => `  ${l}`), `log: ${logFile}`];
}
