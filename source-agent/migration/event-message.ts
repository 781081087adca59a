/**
 * MigrationEvent <-> the ferry.v1 MigrationEvent message: the Source service streams a migration's events to
 * `ferry migrate --via`, which renders them as if the migration ran in-process. Every field is typed on the
 * wire; counts travel as uint64 strings and come back as numbers (they are counts, never addresses).
 */
import { FerryError, type SerializedFerryError } from '../../shared/errors/ferry-error.js';
import { keyForCode } from '../../shared/errors/codes.js';
import { PHASES, type Phase, type SourceState } from '../../shared/phases.js';
import type { CompressMode } from '../../shared/policy/compression-choice.js';
import type * as m from '../../shared/transport/messages.js';
import type { MigrationEvent, MigrationSummary, PhaseTimes, PostCopyChoice, RoundSummary } from './events.js';

export function protoPhase(p: Phase): m.ProtoPhase {
  return `PHASE_${p.toUpperCase().replace('-', '_')}` as m.ProtoPhase;
}

export function phaseFromProto(p: m.ProtoPhase): Phase | undefined {
  return PHASES.find((x) => protoPhase(x) === p);
}

/** `phase` is the phase in progress when the event happened. */
export function toEventMessage(migrationId: string, phase: Phase, e: MigrationEvent): m.MigrationEventMessage {
  const msg: m.MigrationEventMessage = {
    migrationId,
    phase: protoPhase(e.kind === 'phase' || e.kind === 'failed' || e.kind === 'progress' ? e.phase : phase),
    kind: e.kind,
    round: 0,
    dirtyPages: '0',
    pagesSent: '0',
    bytesSent: '0',
    rateBytesPerSecond: 0,
    message: '',
  };
  switch (e.kind) {
    case 'started':
      msg.started = { pid: e.pid, dest: e.dest, tasks: e.tasks, tracker: e.tracker, trackerNote: e.trackerNote };
      break;
    case 'phase':
      break;
    case 'round':
      msg.round = e.round.round;
      msg.dirtyPages = String(e.round.dirtyPages);
      msg.pagesSent = String(e.pagesSent);
      msg.bytesSent = String(e.bytesSent);
      msg.rateBytesPerSecond = e.rateBytesPerSecond;
      msg.roundSummary = roundToMessage(e.round);
      break;
    case 'progress':
      msg.round = e.round;
      msg.pagesSent = String(e.pagesSent);
      msg.bytesSent = String(e.bytesSent);
      break;
    case 'decision':
      msg.message = e.message;
      msg.decision = {
        action: e.action,
        rule: e.rule,
        ...(e.expectedDowntimeMs !== undefined && { expectedDowntimeMs: e.expectedDowntimeMs }),
        ...(e.dirtyRateBytesPerSecond !== undefined && { dirtyRateBytesPerSecond: e.dirtyRateBytesPerSecond }),
        ...(e.transferRateBytesPerSecond !== undefined && { transferRateBytesPerSecond: e.transferRateBytesPerSecond }),
        fixedCostMs: e.fixedCostMs,
        throttlePercent: e.throttlePercent,
        remainingBytes: String(e.remainingBytes),
      };
      break;
    case 'done':
      msg.summary = summaryToMessage(e.summary);
      break;
    case 'failed':
      msg.error = errorToMessage(e.error);
      break;
  }
  return msg;
}

export function fromEventMessage(msg: m.MigrationEventMessage): MigrationEvent {
  const phase = phaseFromProto(msg.phase);
  switch (msg.kind) {
    case 'started': {
      const s = required(msg.started, msg.kind);
      return { kind: 'started', migrationId: msg.migrationId, pid: s.pid, dest: s.dest, tasks: s.tasks, tracker: s.tracker, trackerNote: s.trackerNote };
    }
    case 'phase':
      return { kind: 'phase', phase: required(phase, msg.kind) };
    case 'round':
      return {
        kind: 'round',
        round: roundFromMessage(required(msg.roundSummary, msg.kind)),
        pagesSent: Number(msg.pagesSent),
        bytesSent: Number(msg.bytesSent),
        rateBytesPerSecond: msg.rateBytesPerSecond,
      };
    case 'progress':
      return { kind: 'progress', phase: required(phase, msg.kind), round: msg.round, pagesSent: Number(msg.pagesSent), bytesSent: Number(msg.bytesSent) };
    case 'decision': {
      const d = required(msg.decision, msg.kind);
      if (d.action !== 'continue' && d.action !== 'freeze' && d.action !== 'throttle' && d.action !== 'postcopy' && d.action !== 'abort') throw malformed(`decision action ${d.action}`);
      return {
        kind: 'decision',
        action: d.action,
        rule: d.rule,
        message: msg.message,
        expectedDowntimeMs: d.expectedDowntimeMs,
        dirtyRateBytesPerSecond: d.dirtyRateBytesPerSecond,
        transferRateBytesPerSecond: d.transferRateBytesPerSecond,
        fixedCostMs: d.fixedCostMs,
        throttlePercent: d.throttlePercent,
        remainingBytes: Number(d.remainingBytes),
      };
    }
    case 'done':
      return { kind: 'done', summary: summaryFromMessage(required(msg.summary, msg.kind)) };
    case 'failed':
      return { kind: 'failed', phase: required(phase, msg.kind), error: errorFromMessage(required(msg.error, msg.kind)) };
    default:
      throw malformed(`unknown event kind ${JSON.stringify(msg.kind)}`);
  }
}

function malformed(detail: string): FerryError {
  return new FerryError('INTERNAL', { message: 'The source agent sent a malformed migration event', detail });
}

function required<T>(v: T | null | undefined, kind: string): T {
  if (v === null || v === undefined) throw malformed(`a ${kind} event without its details`);
  return v;
}

function roundToMessage(r: RoundSummary): m.RoundSummaryMessage {
  return {
    round: r.round,
    presentPages: String(r.presentPages),
    dirtyPages: String(r.dirtyPages),
    zeroPages: String(r.zeroPages),
    bytesSent: String(r.bytesSent),
    bytesRead: String(r.bytesRead),
    durationMs: r.durationMs,
    transferMs: r.transferMs,
    throttlePercent: r.throttlePercent,
    codec: r.codec,
    wireBytes: String(r.wireBytes),
  };
}

function roundFromMessage(r: m.RoundSummaryMessage): RoundSummary {
  return {
    round: r.round,
    presentPages: Number(r.presentPages),
    dirtyPages: Number(r.dirtyPages),
    zeroPages: Number(r.zeroPages),
    bytesSent: Number(r.bytesSent),
    bytesRead: Number(r.bytesRead),
    durationMs: r.durationMs,
    transferMs: r.transferMs,
    throttlePercent: r.throttlePercent,
    // An agent from before compression sends neither: it sent every byte as it was.
    codec: r.codec === 'zstd' ? 'zstd' : 'none',
    wireBytes: r.wireBytes ? Number(r.wireBytes) : Number(r.bytesSent),
  };
}

function summaryToMessage(s: MigrationSummary): m.MigrationSummaryMessage {
  const p = s.phases;
  return {
    migrationId: s.migrationId,
    pid: s.pid,
    dest: s.dest,
    tracker: s.tracker,
    tasks: s.tasks,
    rounds: s.rounds.map(roundToMessage),
    decision: s.decision,
    presentPages: String(s.presentPages),
    pagesSent: String(s.pagesSent),
    pageBytesSent: String(s.pageBytesSent),
    finalDeltaPages: String(s.finalDeltaPages),
    dumpPages: String(s.dumpPages),
    imageBytesSent: String(s.imageBytesSent),
    totalMs: s.totalMs,
    downtimeMs: s.downtimeMs,
    phases: phaseTimes(p),
    restoredPid: s.restoredPid,
    dumpKind: s.dumpKind,
    finalDeltaTaskPages: String(s.finalDeltaTaskPages),
    throttle: s.throttle ?? null,
    restoreMode: s.restoreMode,
    fillMs: s.fillMs,
    fillFaults: String(s.fillFaults),
    fillFaultsWaited: String(s.fillFaultsWaited),
    replacedPages: String(s.replacedPages),
    confirmedPages: String(s.confirmedPages),
    filledPages: String(s.filledPages),
    pagerFillUs: String(s.pagerFillUs),
    postCopy: s.postCopy,
    postCopied: s.postCopied,
    precopyBytes: String(s.precopyBytes),
    downtimeBytes: String(s.downtimeBytes),
    postcopyBytes: String(s.postcopyBytes),
    remotePages: String(s.remotePages),
    faultWaitP50Us: String(s.faultWaitP50Us),
    faultWaitP99Us: String(s.faultWaitP99Us),
    originalExitMs: s.originalExitMs,
    originalLeft: s.originalLeft,
    compress: s.compress,
    pageCodec: s.pageCodec,
    pageWireBytes: String(s.pageWireBytes),
  };
}

function summaryFromMessage(s: m.MigrationSummaryMessage): MigrationSummary {
  if (s.dumpKind !== 'lazy' && s.dumpKind !== 'full') throw malformed(`dump kind ${s.dumpKind}`);
  // An agent from before lazy restore sends no mode: it restored eagerly.
  const restoreMode = s.restoreMode || 'eager';
  if (restoreMode !== 'lazy' && restoreMode !== 'eager') throw malformed(`restore mode ${s.restoreMode}`);
  const p = s.phases ?? {};
  return {
    migrationId: s.migrationId,
    pid: s.pid,
    dest: s.dest,
    tracker: s.tracker,
    tasks: s.tasks,
    rounds: s.rounds.map(roundFromMessage),
    decision: s.decision,
    presentPages: Number(s.presentPages),
    pagesSent: Number(s.pagesSent),
    pageBytesSent: Number(s.pageBytesSent),
    finalDeltaPages: Number(s.finalDeltaPages),
    dumpPages: Number(s.dumpPages),
    imageBytesSent: Number(s.imageBytesSent),
    totalMs: s.totalMs,
    downtimeMs: s.downtimeMs,
    phases: phaseTimes(p),
    restoredPid: s.restoredPid,
    dumpKind: s.dumpKind,
    finalDeltaTaskPages: Number(s.finalDeltaTaskPages),
    throttle: s.throttle ? { method: s.throttle.method, maxPercent: s.throttle.maxPercent } : undefined,
    restoreMode,
    fillMs: s.fillMs,
    fillFaults: Number(s.fillFaults),
    fillFaultsWaited: Number(s.fillFaultsWaited),
    replacedPages: Number(s.replacedPages),
    confirmedPages: Number(s.confirmedPages),
    filledPages: Number(s.filledPages ?? 0),
    pagerFillUs: Number(s.pagerFillUs ?? 0),
    // An agent from before post-copy sends none of these: it never post-copied.
    postCopy: postCopyOf(s.postCopy),
    postCopied: s.postCopied ?? false,
    precopyBytes: Number(s.precopyBytes ?? 0),
    downtimeBytes: Number(s.downtimeBytes ?? 0),
    postcopyBytes: Number(s.postcopyBytes ?? 0),
    remotePages: Number(s.remotePages ?? 0),
    faultWaitP50Us: Number(s.faultWaitP50Us ?? 0),
    faultWaitP99Us: Number(s.faultWaitP99Us ?? 0),
    // An agent from before issue 13 does not wait for the original: it reports nothing.
    originalExitMs: s.originalExitMs ?? 0,
    originalLeft: s.originalLeft ?? [],
    // An agent from before compression sends none of these: it never compressed.
    compress: compressOf(s.compress),
    pageCodec: s.pageCodec === 'zstd' ? 'zstd' : 'none',
    pageWireBytes: s.pageWireBytes ? Number(s.pageWireBytes) : Number(s.pageBytesSent),
  };
}

function compressOf(v: string | undefined): CompressMode {
  const c = v || 'off';
  if (c !== 'off' && c !== 'auto' && c !== 'zstd') throw malformed(`compress ${v}`);
  return c;
}

function postCopyOf(v: string | undefined): PostCopyChoice {
  const c = v || 'off';
  if (c !== 'off' && c !== 'auto' && c !== 'always') throw malformed(`post-copy ${v}`);
  return c;
}

/** Only the phases that ran: an unset proto3 optional stays absent, and so does an undefined time. */
function phaseTimes(p: PhaseTimes | m.PhaseTimesMessage): PhaseTimes {
  return Object.fromEntries(Object.entries(p).filter(([, v]) => typeof v === 'number'));
}

function errorToMessage(e: SerializedFerryError): m.ErrorInfoMessage {
  return {
    code: e.code,
    key: e.key,
    message: e.message,
    hint: e.hint,
    phase: e.phase ? protoPhase(e.phase) : 'PHASE_UNSPECIFIED',
    side: e.side ?? '',
    retryable: e.retryable,
    sourceState: e.sourceState ?? '',
    detail: e.detail ?? '',
    rollbackErrors: e.rollbackErrors ?? [],
  };
}

function errorFromMessage(e: m.ErrorInfoMessage): SerializedFerryError {
  const key = keyForCode(e.code);
  if (!key) throw malformed(`error code ${e.code}`);
  const side = e.side === 'source' || e.side === 'dest' ? e.side : undefined;
  const states: readonly string[] = ['running', 'frozen', 'gone', 'unknown'];
  return {
    code: e.code,
    key,
    message: e.message,
    hint: e.hint,
    phase: phaseFromProto(e.phase),
    side,
    retryable: e.retryable,
    sourceState: states.includes(e.sourceState) ? (e.sourceState as SourceState) : undefined,
    detail: e.detail || undefined,
    rollbackErrors: e.rollbackErrors,
  };
}
