/**
 * What is wrong with a config file, each problem with its dotted key and line where known, and the one
 * FerryError (CONFIG_INVALID) that reports them all: the first in the message, every one in the detail.
 */
import { FerryError } from '../errors/ferry-error.js';

export interface ConfigProblem {
  /** Dotted, e.g. `dest-agent.listen`; empty for the file as a whole (a syntax error, its size). */
  key: string;
  line?: number | undefined;
  column?: number | undefined;
  message: string;
}

/** A problem's one line: `FILE:LINE:COL: KEY: MESSAGE` (the parts that are known). */
export function formatConfigProblem(path: string, p: ConfigProblem): string {
  const where = [path, p.line, p.line === undefined ? undefined : p.column].filter((x) => x !== undefined).join(':');
  return `${where}: ${p.key ? `${p.key}: ` : ''}${p.message}`;
}

export function configInvalid(path: string, problems: readonly ConfigProblem[], cause?: unknown): FerryError {
  const [first] = problems;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return new FerryError('CONFIG_INVALID', {
    message: `${first ? formatConfigProblem(path, first) : `${path}: invalid`}${more}`,
    detail: problems.map((p) => formatConfigProblem(path, p)).join('\n'),
    cause,
  });
}
