import { formatHostPort, parseHostPort } from '../../shared/transport/address.js';
import type { PeerInfo } from '../../shared/transport/messages.js';
import { runCheck } from '../../source-agent/check.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const CHECK_HELP = `Usage: ferry check [--to HOST:PORT] [--json]

Reports what this host supports (CRIU, trackers, kernel, page size) and, with --to, what the dest agent
there supports and whether a migration between the two can run. Changes nothing.
Exit code 0 when everything needed is there, 1 otherwise.`;

function describe(side: string, p: PeerInfo): string[] {
  return [
    `${side}: ${p.hostname} (ferry ${p.ferryVersion}, protocol ${p.protocolVersions.join(',')})`,
    `  kernel     ${p.kernel} ${p.arch}, page size ${p.pageSize}`,
    `  criu       ${p.criuVersion ? `${p.criuVersion} ok` : `MISSING: ${p.criuProblem}`}`,
    `  trackers   ${p.trackers.join(', ')} (soft-dirty and uffd-wp are not built yet)`,
  ];
}

export async function checkCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { to: { type: 'string' }, json: { type: 'boolean' } });
  if (values.help) {
    console.log(CHECK_HELP);
    return EXIT.ok;
  }
  const to = values.to ? formatHostPort(parseHostPort(values.to, '--to address')) : undefined;
  const r = await runCheck(to);
  const ok = !!r.source?.criuVersion && (!to || (!!r.dest && !r.destProblem));
  if (values.json) {
    console.log(JSON.stringify({ ok, ...r }));
  } else {
    const lines = describe('source', r.source!);
    if (to) {
      if (r.dest) lines.push(...describe(`dest ${to}`, r.dest));
      lines.push(r.destProblem ? `migration to ${to}: NOT POSSIBLE: ${r.destProblem}` : `migration to ${to}: possible (protocol ${r.protocolVersion})`);
    }
    console.log(lines.join('\n'));
  }
  return ok ? EXIT.ok : EXIT.failed;
}
