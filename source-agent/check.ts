/**
 * `ferry check`: what this host supports, and what the dest answers to Negotiate; with a PID, the preflight
 * migrate would run on that task (source-agent/preflight/). Never changes anything.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { chooseProtocolVersion, localPeerInfo } from '../shared/peer-info.js';
import type { CheckResponse } from '../shared/transport/messages.js';
import type { TransportSecurity } from '../shared/transport/transport-security.js';
import { DestClient } from './dest-client.js';
import { checkPeers } from './migration/check-peers.js';
import { availableTrackers } from './trackers/choose-tracker.js';
import { restoreModesOf, type RestoreModeSupport } from './migration/restore-mode.js';
import { inspectTarget } from './migration/inspect-target.js';
import type { CriuFeaturesChoice } from './migration/criu-features-choice.js';
import { readPreflightFacts } from './preflight/preflight-facts.js';
import { runPreflight, type Finding } from './preflight/preflight.js';
import { probeCriu } from '../shared/criu/criu-binary.js';
import { probeNetworkLock } from '../shared/criu/criu-features.js';

/** The restore modes the dest answered it supports (empty without an answer). */
export function destRestoreModes(r: CheckResponse): RestoreModeSupport[] {
  return r.dest ? restoreModesOf(r.dest) : [];
}

/** `security` absent: TLS from the default files (see DestClient). */
export async function runCheck(dest: string | undefined, signal?: AbortSignal, security?: TransportSecurity): Promise<CheckResponse> {
  const source = await localPeerInfo(await availableTrackers());
  const result: CheckResponse = { source, dest: null, destProblem: '', protocolVersion: 0 };
  if (!dest) return result;
  const client = new DestClient(dest, security);
  try {
    await client.connect(5_000, signal);
    const answer = await client.negotiate({ source }, signal);
    result.dest = answer.dest;
    result.protocolVersion = chooseProtocolVersion(source.protocolVersions, answer.dest.protocolVersions);
    checkPeers(source, answer);
  } catch (e) {
    result.destProblem = e instanceof FerryError ? `${e.code}: ${e.message}${e.detail ? ` (${e.detail})` : ''}` : String(e);
  } finally {
    client.close();
  }
  return result;
}

/**
 * The preflight of task `pid` against the answer of runCheck (its dest, when --to was given): the same checks
 * as the first step of migrate. inspectTarget's refusals (no such task, a kernel thread, ...) are thrown.
 */
export async function runTaskPreflight(pid: number, r: CheckResponse, criuFeatures: CriuFeaturesChoice, allow: readonly string[]): Promise<Finding[]> {
  const target = inspectTarget(pid);
  const criu = await probeCriu();
  const networkLock = criu.ok ? await probeNetworkLock(criu.path) : undefined;
  const facts = readPreflightFacts(target.tasks.map((t) => t.hostPid));
  return runPreflight({ ...facts, criuFeatures, networkLock, source: r.source!, dest: r.dest ?? undefined, arch: r.source!.arch }, allow);
}
