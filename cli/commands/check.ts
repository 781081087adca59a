import { formatHostPort, parseHostPort } from '../../shared/transport/address.js';
import type { PeerInfo } from '../../shared/transport/messages.js';
import { destRestoreModes, runCheck } from '../../source-agent/check.js';
import { trackerAvailability } from '../../source-agent/trackers/choose-tracker.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';
import { TLS_FLAGS, tlsHelp, transportSecurityFromFlags, warnIfPlaintext } from '../tls-flags.js';

export const CHECK_HELP = `Usage: ferry check [--to HOST:PORT [TLS options]] [--json]

Reports what this host supports (CRIU, trackers, kernel, page size) and, with --to, what the dest agent
there supports (its restore modes: lazy, eager, and why not) and whether a migration between the two can
run (over mutual TLS, as a migration would).
Changes nothing. Exit code 0 when everything needed is there, 1 otherwise.

${tlsHelp('dest', false)}`;

function describe(side: string, p: PeerInfo): string[] {
  return [
    `${side}: ${p.hostname} (ferry ${p.ferryVersion}, protocol ${p.protocolVersions.join(',')})`,
    `  kernel     ${p.kernel} ${p.arch}, page size ${p.pageSize}`,
    `  criu       ${p.criuVersion ? `${p.criuVersion} ok` : `MISSING: ${p.criuProblem}`}`,
    `  trackers   ${p.trackers.join(', ') || 'none'}`,
  ];
}

export async function checkCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { to: { type: 'string' }, json: { type: 'boolean' }, ...TLS_FLAGS });
  if (values.help) {
    console.log(CHECK_HELP);
    return EXIT.ok;
  }
  const to = values.to ? formatHostPort(parseHostPort(values.to, '--to address')) : undefined;
  // Only a check with --to dials anything: without it the TLS files are not needed.
  const security = to ? transportSecurityFromFlags(values, ['client']) : undefined;
  if (security) warnIfPlaintext(security);
  const r = await runCheck(to, undefined, security);
  const trackers = await trackerAvailability();
  const ok = !!r.source?.criuVersion && (!to || (!!r.dest && !r.destProblem));
  const restoreModes = destRestoreModes(r);
  if (values.json) {
    console.log(JSON.stringify({ ok, ...r, trackers, ...(to && { restoreModes }) }));
  } else {
    const lines = describe('source', r.source!);
    for (const t of trackers) lines.push(`    ${t.name.padEnd(11)}${t.ok ? 'yes' : 'no '}  ${t.reason}`);
    if (to) {
      if (r.dest) lines.push(...describe(`dest ${to}`, r.dest), '  restore', ...restoreModes.map((x) => `    ${x.mode.padEnd(11)}${x.ok ? 'yes' : 'no '}  ${x.reason}`));
      lines.push(r.destProblem ? `migration to ${to}: NOT POSSIBLE: ${r.destProblem}` : `migration to ${to}: possible (protocol ${r.protocolVersion})`);
    }
    console.log(lines.join('\n'));
  }
  return ok ? EXIT.ok : EXIT.failed;
}
