/**
 * `ferry --version` / `ferry version`: Ferry's version, the CRIU it would run, Node's (and whether package.json's
 * engines allow it), the kernel. The same figures as ferry_build_info and `ferry check`'s runtime line.
 */
import { runtimeReport, type RuntimeReport } from '../../shared/metrics/build-info.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const VERSION_HELP = `Usage: ferry --version | ferry version [--json]

Prints Ferry's version, the CRIU this host would run (found as a migration finds it: FERRY_CRIU, the
system's criu >= 4.2, or the private build scripts/provision-criu.sh made), Node's (and whether it is
within package.json's engines) and the kernel. Exit code 0, also without a usable CRIU (then the line
says why).`;

function criuText(r: RuntimeReport): string {
  return r.criuPath ? `criu ${r.criuVersion} (${r.criuPath})` : `criu none: ${r.criuProblem}`;
}

function nodeText(r: RuntimeReport): string {
  const verdict = r.nodeSupported === undefined ? 'range not understood' : r.nodeSupported ? 'ok' : 'NOT SUPPORTED';
  return `node ${r.nodeVersion} (engines ${r.nodeEngines}: ${verdict})`;
}

/** `ferry check`'s runtime line: what this command runs on, in one line. */
export function runtimeLine(r: RuntimeReport): string {
  return `ferry ${r.version}, ${nodeText(r)}, ${criuText(r)}, kernel ${r.kernel} ${r.arch}`;
}

/** The JSON of both commands. */
export function runtimeJson(r: RuntimeReport): Record<string, unknown> {
  const { version, nodeVersion, nodeEngines, nodeSupported, criuVersion, criuPath, criuProblem, kernel, arch } = r;
  return { version, nodeVersion, nodeEngines, nodeSupported, criuVersion, criuPath, criuProblem, kernel, arch };
}

export async function versionCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { json: { type: 'boolean' } }, false);
  if (values.help) {
    console.log(VERSION_HELP);
    return EXIT.ok;
  }
  const r = await runtimeReport();
  if (values.json) console.log(JSON.stringify(runtimeJson(r)));
  else console.log([`ferry ${r.version}`, criuText(r), nodeText(r), `kernel ${r.kernel} ${r.arch}`].join('\n'));
  return EXIT.ok;
}
