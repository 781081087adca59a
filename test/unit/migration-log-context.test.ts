/**
 * Every line of a migration says where it is, on both sides, without its call site passing it (issue 14):
 * the source's lines carry side, migrationId and the state machine's phase and round (a fake world); the
 * dest's carry its session's (a real Dest service on loopback, fed by the source's page stream).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, type LogFields } from '../../shared/logging/logger.js';
import { compileMigrateOptions } from '../../source-agent/config/migrate-options.js';
import { GrpcPageStream } from '../../source-agent/grpc-page-stream.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import { world, type Failure } from '../fakes/fake-migration-world.js';
import { chunk, EPOCH, handBatch, prepareRequest, startDest, upload } from '../support/dest-grpc.js';

let imagesRoot: string;
beforeAll(async () => {
  imagesRoot = await mkdtemp(join(tmpdir(), 'ferry-log-context-'));
});
afterAll(async () => {
  await rm(imagesRoot, { recursive: true, force: true });
});

function capture(side: 'source' | 'dest'): { records: LogFields[]; log: ReturnType<typeof createLogger> } {
  const records: LogFields[] = [];
  return { records, log: createLogger({ side }, (l) => records.push(JSON.parse(l) as LogFields), 'debug', 'json') };
}

async function sourceRun(fail?: Failure): Promise<{ records: LogFields[]; migrationId: string | undefined }> {
  const { records, log } = capture('source');
  const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1, commitPatienceMs: 1_500, undeliveredPatienceMs: 300 });
  const summary = await migrate(opts, { log, emit: () => undefined, signal: new AbortController().signal, ports: world(fail).ports }).catch(() => undefined);
  return { records, migrationId: summary?.migrationId };
}

describe('the source', () => {
  it('writes the phase and the round on every line of the migration, read as the machine moves', async () => {
    const { records, migrationId } = await sourceRun();
    expect(migrationId).toBeDefined();
    expect(records.length).toBeGreaterThan(5);
    for (const r of records) expect([r.side, r.migrationId, typeof r.phase]).toEqual(['source', migrationId, 'string']);
    // One round (its one dirty page is under the floor), then the freeze.
    expect(records.filter((r) => r.msg === 'round done').map((r) => [r.phase, r.round])).toEqual([['precopy', 0]]);
    // The decision line passes no round: the context gives the one it follows.
    expect(records.filter((r) => r.msg === 'decision').map((r) => [r.phase, r.round])).toEqual([['precopy', 0]]);
    // Out of the pre-copy, no round.
    const later = records.filter((r) => r.msg === 'phase' && r.phase !== 'precopy');
    expect(later.map((r) => r.phase)).toEqual(['prepare', 'freeze', 'final-delta', 'restore', 'commit']);
    expect(later.every((r) => !('round' in r))).toBe(true);
    expect(records.find((r) => r.msg === 'final delta sent')).toMatchObject({ phase: 'final-delta' });
    expect(records.find((r) => r.msg === 'migrated')).toMatchObject({ phase: 'commit' });
  });

  it('names the phase and round a migration failed in, on the failure and on the lines of its rollback', async () => {
    const { records } = await sourceRun('precopy');
    const failed = records.find((r) => r.msg === 'migration failed');
    expect(failed).toMatchObject({ side: 'source', phase: 'precopy', round: 0, level: 'error' });
    expect(typeof failed!.code).toBe('string');
    expect(failed!.migrationId).toEqual(records[0]!.migrationId);
  });
});

describe('the dest', () => {
  it("writes its session's phase and round: prepare, precopy by the batches' round, final-delta, rollback", async () => {
    const { records, log } = capture('dest');
    const d = await startDest({ log });
    try {
      const req = prepareRequest();
      await d.client.prepare(req);
      const sender = new GrpcPageStream(d.client, { migrationId: req.migrationId, epoch: EPOCH, windowBytes: 1 << 20, signal: new AbortController().signal, phase: () => 'precopy' });
      await sender.send(1, 0, handBatch([1, 2]));
      await sender.send(1, 0, handBatch([3]));
      await sender.send(1, 1, handBatch([1]));
      await sender.flush();
      // A chunk the dest refuses: its failure is logged on the session's line, in the final delta.
      await upload(d.client, [chunk(req.migrationId, '../escape.img', Buffer.from('x'))]).catch(() => undefined);
      await sender.finish();
      await d.client.abort({ migrationId: req.migrationId, epoch: EPOCH, reason: 'test over' });
      const mine = records.filter((r) => r.migrationId === req.migrationId);
      for (const r of mine) expect(r.side).toBe('dest');
      const at = (msg: string): LogFields[] => mine.filter((r) => r.msg === msg);
      expect(at('session prepared').map((r) => [r.phase, r.round])).toEqual([['prepare', undefined]]);
      // One line per round, not per batch.
      expect(at('receiving a round').map((r) => [r.phase, r.round])).toEqual([
        ['precopy', 0],
        ['precopy', 1],
      ]);
      expect(at('image upload failed').map((r) => [r.phase, r.round, r.code])).toEqual([['final-delta', undefined, 'FERRY-5002']]);
      expect(at('session aborted').map((r) => r.phase)).toEqual(['rollback']);
    } finally {
      await d.close();
    }
  });
});
