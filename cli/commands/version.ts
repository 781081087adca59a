/** `ferry --version` / `ferry version`: Ferry's version, the CRIU it would run, Node's (the labels of ferry_build_info). */
import { buildVersions } from '../../shared/metrics/build-info.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const VERSION_HELP = `Usage: ferry --version | ferry version [--json]

Prints Ferry's version, the CRIU this host would run (found as a migration finds it: FERRY_CRIU, the
system's criu >= 4.2, or the private build scripts/provision-criu.sh made) and Node's. Exit code 0, also
without a usable CRIU (then the line says why).`;

export async function versionCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { json: { type: 'boolean' } }, false);
  if (values.help) {
    console.log(VERSION_HELP);
    return EXIT.ok;
  }
  const v = await buildVersions();
  if (values.json) {
    console.log(JSON.stringify({ version: v.version, criuVersion: v.criuVersion, criuPath: v.criuPath, criuProblem: v.criuProblem, nodeVersion: v.nodeVersion }));
  } else {
    console.log([`ferry ${v.version}`, v.criuPath ? `criu ${v.criuVersion} (${v.criuPath})` : `criu none: ${v.criuProblem}`, `node ${v.nodeVersion}`].join('\n'));
  }
  return EXIT.ok;
}
