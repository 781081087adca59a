import { FerryError } from '../../shared/errors/ferry-error.js';
import { formatHostPort, parseHostPort } from '../../shared/transport/address.js';
import type * as grpc from '@grpc/grpc-js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import type { CheckRequest, CheckResponse, PeerInfo, PreflightFindingMessage } from '../../shared/transport/messages.js';
import { destRestoreModes, runCheck, runTaskCheck } from '../../source-agent/check.js';
import { compileCriuFeatures } from '../../source-agent/config/migrate-options.js';
import { compileAllow } from '../../source-agent/preflight/preflight.js';
import { trackerAvailability, type TrackerAvailability } from '../../source-agent/trackers/choose-tracker.js';
import type { TrackerName } from '../../source-agent/trackers/tracker.js';
import { connectionError, sourceAgentSocket, sourceClient, type SourceAgentSocket } from '../source-agent-socket.js';
import { intFlag, parse } from '../args.js';
import { nodeLifeNote } from '../../shared/runtime/node-runtime.js';
import { EXIT } from '../exit-codes.js';
import { TLS_FLAGS, tlsHelp, transportSecurityFromFlags, warnIfPlaintext } from '../tls-flags.js';
import { applyHostConfig } from '../config/agent-config.js';
import { runtimeReport } from '../../shared/metrics/build-info.js';
import { runtimeJson, runtimeLine } from './version.js';

export const CHECK_HELP = `Usage: ferry check [PID] [--to HOST:PORT] [--via PATH | TLS options] [--json]

Reports what this command runs on (the runtime line: Ferry's version, Node's and whether package.json's
engines allow it, CRIU's path and version, the kernel), what this host supports (CRIU, trackers, kernel,
page size) and, with --to, what the dest agent there supports (its restore modes: lazy, eager, and why
not) and whether a migration between the two can run (over mutual TLS, as a migration would).
With a PID, also runs the migratability preflight on that task, the first step of every migrate: each
check (capabilities, file locks, TCP, local addresses, SysV IPC, huge pages, io_uring, uprobes, device
mappings, namespace handles, vfork, zombie threads, mount paths, CPU features) says ok, note or refuse,
with a code and a hint (README, Preflight). The checks of the dest (local addresses, mount paths, CPU
features) need --to.
Changes nothing. Exit code 0 when everything needed is there, 1 otherwise (any refusal, no CRIU, a Node
outside the engines).

Options:
  --allow CHECK[,CHECK]   report an overridable check's refusal as a note, as migrate --allow does
                          (only cpu-features may be overridden)
  --file-locks WHEN       auto (default), on or off: as migrate's, for the file-locks check
  --tcp-established WHEN  auto (default), on or off: as migrate's, for the tcp-connections check
  --via PATH              check in the source agent daemon on this Unix socket (its --socket), as its
                          migrate --via would run: its CRIU, capabilities and namespaces, its certificate
                          to the dest (then no TLS options here); a PID needs the same permission as
                          migrating it

${tlsHelp('dest', false)}`;

function describe(side: string, p: PeerInfo): string[] {
  return [
    `${side}: ${p.hostname} (ferry ${p.ferryVersion}, protocol ${p.protocolVersions.join(',')})`,
    `  kernel     ${p.kernel} ${p.arch}, page size ${p.pageSize}`,
    `  criu       ${p.criuVersion ? `${p.criuVersion} ok` : `MISSING: ${p.criuProblem}`}`,
    `  node       ${p.nodeVersion ? `${p.nodeVersion}, ${nodeLifeNote(p.nodeVersion)}` : 'not reported (an older Ferry)'}`,
    `  trackers   ${p.trackers.join(', ') || 'none'}`,
  ];
}

/** Check in the source agent on `socket`: its answer, or its refusal with its code. Bounded: the agent's own dials are. */
async function checkVia(socket: SourceAgentSocket, request: CheckRequest): Promise<CheckResponse> {
  const client = sourceClient<{ Check: (r: CheckRequest, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: CheckResponse) => void) => void }>(socket);
  try {
    return await new Promise<CheckResponse>((done, fail) =>
      client.Check(request, { deadline: Date.now() + 60_000 }, (e, res) => (e ? fail(fromServiceError(e, connectionError(socket, e))) : done(res))),
    );
  } finally {
    client.close();
  }
}

function describeFindings(pid: number, findings: readonly PreflightFindingMessage[]): string[] {
  const refused = findings.filter((f) => f.verdict === 'refuse').length;
  const lines = [`preflight of task ${pid}: ${refused === 0 ? 'migratable' : `REFUSED by ${refused} check(s)`}`];
  for (const f of findings) {
    lines.push(`  ${f.check.padEnd(16)}${f.verdict.padEnd(7)}${f.code}  ${f.message}`);
    if (f.verdict === 'refuse') lines.push(`  ${''.padEnd(23)}hint: ${f.hint}`);
  }
  return lines;
}

export async function checkCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { to: { type: 'string' }, via: { type: 'string' }, json: { type: 'boolean' }, allow: { type: 'string', multiple: true }, 'file-locks': { type: 'string' }, 'tcp-established': { type: 'string' }, ...TLS_FLAGS },
    true,
  );
  if (values.help) {
    console.log(CHECK_HELP);
    return EXIT.ok;
  }
  if (positionals.length > 1 || (positionals.length === 1 && !/^\d+$/.test(positionals[0]!))) {
    throw new FerryError('BAD_ARGUMENT', { message: 'ferry check takes at most one PID', hint: 'Usage: ferry check [PID] [--to HOST:PORT]' });
  }
  const pid = positionals.length === 1 ? intFlag('PID', positionals[0]) : undefined;
  // Validated before anything is dialed: a mistyped check name is a usage error, not a finding.
  const allow = compileAllow(values.allow);
  const criuFeatures = compileCriuFeatures(values['file-locks'], values['tcp-established']);
  const to = values.to ? formatHostPort(parseHostPort(values.to, '--to address')) : undefined;
  const via = values.via === undefined ? undefined : sourceAgentSocket(values.via);
  if (via && Object.keys(TLS_FLAGS).some((f) => values[f as keyof typeof TLS_FLAGS] !== undefined)) {
    throw new FerryError('BAD_ARGUMENT', { message: 'the TLS flags apply to a check in this process only', hint: 'With --via the source agent dials the dest with its own certificate: drop --tls-*, --allow-peer and --insecure.' });
  }
  // Beside the check: it reads nothing the check changes, and criu --version is quick.
  const runtime = runtimeReport();
  let r: CheckResponse;
  let findings: readonly PreflightFindingMessage[] | undefined;
  let trackers: TrackerAvailability[];
  if (via) {
    r = await checkVia(via, { dest: to ?? '', ...(pid !== undefined && { pid, allow: values.allow ?? [], fileLocks: values['file-locks'], tcpEstablished: values['tcp-established'] }) });
    findings = pid === undefined ? undefined : (r.preflight ?? []);
    // The agent's trackers are those it offers; why one is not is in its own log.
    trackers = (r.source?.trackers ?? []).map((name) => ({ name: name as TrackerName, ok: true, reason: 'offered by the source agent' }));
  } else {
    // The criu of the host's config file, as its agents run it.
    applyHostConfig();
    // Only a check with --to dials anything: without it the TLS files are not needed.
    const security = to ? transportSecurityFromFlags(values, ['client']) : undefined;
    if (security) warnIfPlaintext(security);
    ({ response: r, findings } = pid === undefined ? { response: await runCheck(to, undefined, security), findings: undefined } : await runTaskCheck(pid, to, criuFeatures, allow, undefined, security));
    trackers = await trackerAvailability();
  }
  const migratable = !findings?.some((f) => f.verdict === 'refuse');
  const rt = await runtime;
  const ok = !!r.source?.criuVersion && (!to || (!!r.dest && !r.destProblem)) && migratable && rt.nodeSupported !== false;
  const restoreModes = destRestoreModes(r);
  if (values.json) {
    const preflight = findings?.map(({ check, verdict, code, message, hint }) => ({ check, verdict, code, message, hint }));
    const { preflight: _agentFindings, ...response } = r;
    console.log(JSON.stringify({ ok, runtime: runtimeJson(rt), ...response, ...(via && { via: via.path }), trackers, ...(to && { restoreModes }), ...(preflight && { pid, preflight }) }));
  } else {
    const lines = [`runtime: ${runtimeLine(rt)}`, ...describe('source', r.source!)];
    for (const t of trackers) lines.push(`    ${t.name.padEnd(11)}${t.ok ? 'yes' : 'no '}  ${t.reason}`);
    if (to) {
      if (r.dest) lines.push(...describe(`dest ${to}`, r.dest), '  restore', ...restoreModes.map((x) => `    ${x.mode.padEnd(11)}${x.ok ? 'yes' : 'no '}  ${x.reason}`));
      lines.push(r.destProblem ? `migration to ${to}: NOT POSSIBLE: ${r.destProblem}` : `migration to ${to}: possible (protocol ${r.protocolVersion})`);
    }
    if (findings && pid !== undefined) lines.push(...describeFindings(pid, findings));
    console.log(lines.join('\n'));
  }
  return ok ? EXIT.ok : EXIT.failed;
}
