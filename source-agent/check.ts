/**
 * `ferry check`: what this host supports, and what the dest answers to Negotiate; with a PID, the preflight
 * migrate would run on that task (source-agent/preflight/). Never changes anything.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import { chooseProtocolVersion, localPeerInfo } from '../shared/peer-info.js';
import type { TaskNetwork } from '../shared/kernel/task-network.js';
import type { CheckResponse, TaskNetworkAnswerMessage } from '../shared/transport/messages.js';
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
  return (await askDest(dest, [], undefined, signal, security)).response;
}

/**
 * runCheck's work; `externalMounts` and `taskNetwork` go with Negotiate, and the dest's answers come back as
 * `missingMounts` and `taskNetworkAnswer`.
 */
async function askDest(
  dest: string | undefined,
  externalMounts: readonly string[],
  taskNetwork: TaskNetwork | undefined,
  signal?: AbortSignal,
  security?: TransportSecurity,
): Promise<{ response: CheckResponse; missingMounts: string[]; taskNetworkAnswer?: TaskNetworkAnswerMessage | null | undefined }> {
  const source = await localPeerInfo(await availableTrackers());
  const result: CheckResponse = { source, dest: null, destProblem: '', protocolVersion: 0 };
  let missingMounts: string[] = [];
  let taskNetworkAnswer: TaskNetworkAnswerMessage | null | undefined;
  if (!dest) return { response: result, missingMounts };
  const client = new DestClient(dest, security);
  try {
    await client.connect(5_000, signal);
    const answer = await client.negotiate({ source, externalMounts: [...externalMounts], taskNetwork: taskNetwork ?? null }, signal);
    result.dest = answer.dest;
    result.protocolVersion = chooseProtocolVersion(source.protocolVersions, answer.dest.protocolVersions);
    missingMounts = answer.missingMounts ?? [];
    taskNetworkAnswer = answer.taskNetwork;
    checkPeers(source, answer);
  } catch (e) {
    result.destProblem = e instanceof FerryError ? `${e.code}: ${e.message}${e.detail ? ` (${e.detail})` : ''}` : String(e);
  } finally {
    client.close();
  }
  return { response: result, missingMounts, taskNetworkAnswer };
}

export interface TaskCheck {
  response: CheckResponse;
  findings: Finding[];
}

/**
 * runCheck and the preflight of task `pid` (against its dest, when given): the same checks as the first step
 * of migrate, on facts read before Negotiate (the dest answers which of the task's mount paths it lacks).
 * inspectTarget's refusals (no such task, a kernel thread, ...) are thrown.
 */
export async function runTaskCheck(
  pid: number,
  dest: string | undefined,
  criuFeatures: CriuFeaturesChoice,
  allow: readonly string[],
  signal?: AbortSignal,
  security?: TransportSecurity,
): Promise<TaskCheck> {
  const target = inspectTarget(pid);
  const facts = readPreflightFacts(target.tasks.map((t) => t.hostPid));
  const { response: r, missingMounts, taskNetworkAnswer } = await askDest(dest, facts.tree.externalMounts ?? [], facts.tree.taskNetwork, signal, security);
  const criu = await probeCriu();
  const networkLock = criu.ok ? await probeNetworkLock(criu.path) : undefined;
  const input = { ...facts, criuFeatures, networkLock, source: r.source!, dest: r.dest ?? undefined, missingMounts, taskNetworkAnswer, arch: r.source!.arch };
  return { response: r, findings: runPreflight(input, allow) };
}
