/**
 * What `ferry migrate --via` and the source agent exchange: the operator's options as a MigrateRequest, and
 * every migration event as a typed MigrationEvent message. Each goes through the real ferry.v1 serializers and
 * must come back exactly as it left.
 */
import { describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import type * as m from '../../shared/transport/messages.js';
import { ferryProto } from '../../shared/transport/proto.js';
import type { MigrateOptions } from '../../source-agent/config/migrate-options.js';
import { fromMigrateRequest, toMigrateRequest } from '../../source-agent/config/migrate-request.js';
import { fromEventMessage, toEventMessage } from '../../source-agent/migration/event-message.js';
import type { MigrationEvent, MigrationSummary } from '../../source-agent/migration/events.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

interface WireMethod {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}
const migrateMethod = (): WireMethod => (ferryProto().Source.service as unknown as Record<string, WireMethod>).Migrate!;
const overTheWire = (msg: m.MigrationEventMessage): m.MigrationEventMessage =>
  migrateMethod().responseDeserialize(migrateMethod().responseSerialize(msg)) as m.MigrationEventMessage;

const round = { round: 1, presentPages: 65600, dirtyPages: 1200, zeroPages: 3, bytesSent: 1197 * 4096, bytesRead: 256 * 2 ** 20, durationMs: 40.5, transferMs: 30.25, throttlePercent: 20, codec: 'zstd' as const, wireBytes: 300 * 4096 };
const summary: MigrationSummary = {
  migrationId: '0b9e4c4e-5d0f-4e43-9d57-3a1f0c7f2a11',
  pid: 4242,
  dest: '10.0.0.2:7070',
  tracker: 'uffd-wp',
  tasks: 3,
  rounds: [{ ...round, round: 0 }, round],
  decision: 'freezing: the dirty set sends in ~47 ms <= 300 ms budget',
  presentPages: 65536,
  pagesSent: 67000,
  pageBytesSent: 270 * 2 ** 20,
  finalDeltaPages: 264,
  dumpPages: 65700,
  imageBytesSent: 300 * 1024,
  totalMs: 12_345.5,
  downtimeMs: 187.4,
  phases: { dumpMs: 60, finalDeltaMs: 30, rebuildMs: 20, restoreMs: 70, commitMs: 7.4 },
  restoredPid: 777,
  throttle: { method: 'cgroup-v2', maxPercent: 40 },
  dumpKind: 'lazy',
  finalDeltaTaskPages: 12,
  restoreMode: 'lazy',
  fillMs: 420.5,
  fillFaults: 31,
  fillFaultsWaited: 4,
  replacedPages: 1,
  confirmedPages: 900,
  filledPages: 1000,
  pagerFillUs: 2000,
  postCopy: 'auto',
  postCopied: true,
  precopyBytes: 1000,
  downtimeBytes: 200,
  postcopyBytes: 300,
  remotePages: 7,
  faultWaitP50Us: 40,
  faultWaitP99Us: 900,
  originalExitMs: 37.5,
  originalLeft: [4243],
  compress: 'zstd',
  pageCodec: 'zstd',
  pageWireBytes: 12345,
};

const events: MigrationEvent[] = [
  { kind: 'started', migrationId: summary.migrationId, pid: 4242, dest: '10.0.0.2:7070', tasks: 3, tracker: 'uffd-wp', trackerNote: 'uffd-wp tracker (as asked)' },
  { kind: 'phase', phase: 'final-delta' },
  { kind: 'round', round, pagesSent: 66736, bytesSent: 269 * 2 ** 20, rateBytesPerSecond: 110.5 * 2 ** 20 },
  {
    kind: 'decision',
    action: 'throttle',
    rule: 'not-converging',
    message: 'throttling task to 80 % of its CPU',
    expectedDowntimeMs: 250.5,
    dirtyRateBytesPerSecond: 1e6,
    transferRateBytesPerSecond: 2e6,
    fixedCostMs: 200,
    throttlePercent: 20,
    remainingBytes: 4096 * 1200,
  },
  // Before the first transfer sample the policy knows no rates: absent, not zero.
  { kind: 'decision', action: 'continue', rule: 'continue', message: 'round 0', expectedDowntimeMs: undefined, dirtyRateBytesPerSecond: undefined, transferRateBytesPerSecond: undefined, fixedCostMs: 0, throttlePercent: 0, remainingBytes: 0 },
  { kind: 'done', summary },
  { kind: 'done', summary: { ...summary, throttle: undefined, phases: { dumpMs: 60 }, dumpKind: 'full' } },
  { kind: 'failed', phase: 'restore', error: new FerryError('CRIU_RESTORE_FAILED', { phase: 'restore', side: 'dest', sourceState: 'running', detail: 'criu said no' }).toJSON() },
  { kind: 'failed', phase: 'negotiate', error: new FerryError('TASK_NOT_FOUND').toJSON() },
  // Lazy restore: the fill phase, its failure, and an eager summary (no fill figures).
  { kind: 'phase', phase: 'fill' },
  { kind: 'failed', phase: 'fill', error: new FerryError('FILL_FAILED', { phase: 'fill', side: 'dest', sourceState: 'running' }).toJSON() },
  { kind: 'done', summary: { ...summary, restoreMode: 'eager', fillMs: 0, fillFaults: 0, fillFaultsWaited: 0, replacedPages: 0, confirmedPages: 0, filledPages: 0, pagerFillUs: 0 } },
  // A running round's progress (cumulative figures, like a round's).
  { kind: 'progress', phase: 'precopy', round: 3, pagesSent: 41_000, bytesSent: 160 * 2 ** 20 },
];

describe('MigrationEvent over the wire', () => {
  it.each(events.map((e) => [e.kind, e] as const))('%s comes back exactly as it left', (_kind, e) => {
    const back = fromEventMessage(overTheWire(toEventMessage(summary.migrationId, 'precopy', e)));
    expect(back).toEqual(JSON.parse(JSON.stringify(e)) as unknown); // undefined fields stay absent
  });

  it('carries no JSON: the deprecated json field stays empty', () => {
    for (const e of events) expect((overTheWire(toEventMessage('m', 'precopy', e)) as { json?: string }).json ?? '').toBe('');
  });

  it('names the failed phase in the message phase, and the phase in progress otherwise', () => {
    expect(toEventMessage('m', 'precopy', events[2]!).phase).toBe('PHASE_PRECOPY');
    expect(toEventMessage('m', 'commit', events[7]!).phase).toBe('PHASE_RESTORE');
  });

  it('refuses a message it cannot read, with a code', () => {
    const base = toEventMessage('m', 'precopy', events[0]!);
    expectFerryError(() => fromEventMessage({ ...base, kind: 'teleported' }), 'INTERNAL');
    expectFerryError(() => fromEventMessage({ ...base, started: null }), 'INTERNAL');
    const failed = toEventMessage('m', 'precopy', events[7]!);
    expectFerryError(() => fromEventMessage({ ...failed, error: { ...failed.error!, code: 'FERRY-4242' } }), 'INTERNAL');
  });
});

describe('MigrateRequest', () => {
  const wire = (r: m.MigrateRequest): m.MigrateRequest => migrateMethod().requestDeserialize(migrateMethod().requestSerialize(r)) as m.MigrateRequest;

  it.each<[string, MigrateOptions]>([
    ['only what is required', { pid: 42, to: '10.0.0.2:7070' }],
    [
      'every flag',
      { pid: 42, to: '[::1]:7070', maxRounds: 3, maxDowntimeMs: 150, freezeTimeoutMs: 5000, restoreTimeoutMs: 9000, bandwidthBytesPerSecond: 12.5e6, onNoConverge: 'abort', noPrecopy: true, tracker: 'hash', commitPatienceMs: 60_000, restore: 'lazy' },
    ],
    ['post-copy (issue 12)', { pid: 42, to: 'h:1', postCopy: 'always', onNoConverge: 'postcopy' }],
    ['--allow (issue 13)', { pid: 42, to: 'h:1', allow: ['cpu-features'] }],
    ['--compress (issue 15)', { pid: 42, to: 'h:1', compress: 'zstd' }],
    ['--page-channels (issue 15)', { pid: 42, to: 'h:1', pageChannels: 0 }],
  ])('carries %s as given, leaving the defaults to the agent', (_name, o) => {
    const back = fromMigrateRequest(wire(toMigrateRequest(o)));
    expect(back).toEqual(o);
  });

  it('keeps a given 0 apart from an option not given: the agent refuses the one and defaults the other', () => {
    expect(fromMigrateRequest(wire(toMigrateRequest({ pid: 42, to: 'h:1', maxRounds: 0, noPrecopy: false })))).toMatchObject({ maxRounds: 0, noPrecopy: false });
    expect(fromMigrateRequest(wire(toMigrateRequest({ pid: 42, to: 'h:1' }))).maxRounds).toBeUndefined();
  });
});
