/**
 * Issue 9's findings against the dest, each over a real gRPC server on 127.0.0.1:0 and each asserting its code:
 * descending pages and store levels, zero pages and the session budget, session and stream bounds with their
 * idle times, the pid list, oversized strings and error trailers, epochs, durations, the batch sequence.
 * Nothing here needs root or CRIU.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DestLimits } from '../../dest-agent/dest-limits.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { createLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import type { PageBatch } from '../../shared/transport/page-batch.js';
import type { DestClient } from '../../source-agent/dest-client.js';
import { GrpcPageStream } from '../../source-agent/grpc-page-stream.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { chunk, EPOCH, handBatch, prepareRequest, sourcePeer, startDest, upload, type DestUnderTest } from '../support/dest-grpc.js';

const TASK = 1;
const opened: DestUnderTest[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.close();
});

async function dest(limits: Partial<DestLimits> = {}, log?: ReturnType<typeof createLogger>): Promise<DestUnderTest> {
  const d = await startDest({ limits, ...(log ? { log } : {}) });
  opened.push(d);
  return d;
}

async function prepared(client: DestClient, over: Partial<m.PrepareRequest> = {}): Promise<{ id: string; dir: string; epoch: string }> {
  const req = prepareRequest(over);
  const res = await client.prepare(req);
  return { id: req.migrationId, dir: res.workDir, epoch: req.epoch };
}

const sender = (client: DestClient, id: string, epoch = EPOCH): GrpcPageStream =>
  new GrpcPageStream(client, { migrationId: id, epoch, windowBytes: 4 << 20, signal: new AbortController().signal, phase: () => 'precopy' });

const descending = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from - i);
const ascending = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

const openFds = (): number => readdirSync('/proc/self/fd').length;

/** A raw StreamPages call: writes `messages` as they are (any seq), ends, and collects the acks and the error. */
function rawPageStream(client: DestClient, messages: readonly m.PageBatchMessage[], end = true): { done: Promise<{ acks: m.PageAck[]; error: FerryError | undefined }>; call: grpc.ClientDuplexStream<m.PageBatchMessage, m.PageAck> } {
  const call = (client.raw.StreamPages as () => grpc.ClientDuplexStream<m.PageBatchMessage, m.PageAck>)();
  const acks: m.PageAck[] = [];
  const done = new Promise<{ acks: m.PageAck[]; error: FerryError | undefined }>((resolve) => {
    call.on('data', (a: m.PageAck) => acks.push(a));
    call.on('error', (err: grpc.ServiceError) => resolve({ acks, error: fromServiceError(err, new FerryError('PAGE_STREAM_FAILED', { detail: err.message, cause: err })) }));
    call.on('status', (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) resolve({ acks, error: undefined });
    });
  });
  for (const msg of messages) call.write(msg);
  if (end) call.end();
  return { done, call };
}

const message = (id: string, seq: number, batch: PageBatch, epoch = EPOCH): m.PageBatchMessage => ({ migrationId: id, epoch, seq: String(seq), round: 0, task: TASK, ...batch });

/** Fails the test instead of hanging when `p` does not settle within `ms` (the wedged-connection finding). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('store levels and open files (finding: 25,000 descending pages opened 20,000 files)', () => {
  it('refuses a batch of 25,000 pages (REQUEST_INVALID) and descending pages past the level bound (PAGE_STORE_LIMIT), storing nothing of either', async () => {
    const d = await dest();
    const { id, dir } = await prepared(d.client, { expectedBytes: String(25_000 * PAGE_SIZE) });
    const huge = await rawPageStream(d.client, [message(id, 1, handBatch(descending(30_000, 25_000), { zero: 'all' }))]).done;
    expect(huge.error?.key).toBe('REQUEST_INVALID');
    // 4096 descending pages would make 4096 levels: refused whole, before a file is made.
    const fds = openFds();
    const deep = await rawPageStream(d.client, [message(id, 1, handBatch(descending(30_000, 4096)))]).done;
    expect(deep.error?.key).toBe('PAGE_STORE_LIMIT');
    expect(readdirSync(join(dir, 'pages'))).toEqual([]);
    expect(openFds() - fds).toBeLessThanOrEqual(2);
  });

  it('keeps the open level files under the agent bound however many levels there are, and other streams go on', async () => {
    const d = await dest({ maxStoreLevels: 40, maxOpenLevelFiles: 4 });
    const { id, dir } = await prepared(d.client);
    const fds = openFds();
    // One page per batch, each below the last: one new level each.
    const s = sender(d.client, id);
    for (let i = 0; i < 40; i++) await s.send(TASK, 0, handBatch([1000 - i]));
    await s.flush();
    expect(readdirSync(join(dir, 'pages'))).toHaveLength(40);
    expect(openFds() - fds).toBeLessThanOrEqual(4 + 2);
    await s.send(TASK, 0, handBatch([100]));
    await expectFerryRejection(s.finish(), 'PAGE_STORE_LIMIT');
    // Another client's stream is not hurt (no EMFILE): it stores its pages.
    const other = await prepared(d.client);
    const s2 = sender(d.client, other.id);
    await s2.send(TASK, 0, handBatch(ascending(1, 8)));
    await s2.finish();
    expect((await stat(join(other.dir, 'pages', `task-${TASK}.L0.pages`))).size).toBe(8 * PAGE_SIZE);
  });
});

describe('zero pages and the session budget (finding: 200,000 zero pages wrote 819 MB)', () => {
  it('stores 200,000 zero pages as holes: the level reads 819 MB long and uses almost no disk', async () => {
    const d = await dest();
    const pages = 200_000;
    const { id, dir } = await prepared(d.client, { expectedBytes: String(pages * PAGE_SIZE) });
    const s = sender(d.client, id);
    for (let p = 0; p < pages; p += 4096) await s.send(TASK, 0, handBatch(ascending(p, Math.min(4096, pages - p)), { zero: 'all' }));
    await s.finish();
    const st = await stat(join(dir, 'pages', `task-${TASK}.L0.pages`));
    console.log(`200,000 zero pages: file length ${st.size} bytes, ${st.blocks * 512} bytes on disk`);
    expect(st.size).toBe(pages * PAGE_SIZE);
    expect(st.blocks * 512).toBeLessThan(1 << 20);
  });

  it('refuses pages and images past what the Prepare announced (SESSION_QUOTA_EXCEEDED), storing none of the refused batch', async () => {
    const d = await dest({ growthShare: 0, slackBytes: 64 * PAGE_SIZE });
    const a = await prepared(d.client, { expectedBytes: String(16 * PAGE_SIZE) });
    const s = sender(d.client, a.id);
    await s.send(TASK, 0, handBatch(ascending(0, 80)));
    await s.flush();
    await s.send(TASK, 0, handBatch(ascending(80, 1)));
    const e = await expectFerryRejection(s.finish(), 'SESSION_QUOTA_EXCEEDED');
    expect(e.retryable).toBe(true);
    expect((await stat(join(a.dir, 'pages', `task-${TASK}.L0.pages`))).size).toBe(80 * PAGE_SIZE);
    // Zero pages cost no disk but a slot each: they are bounded too.
    const b = await prepared(d.client);
    const zeros = await rawPageStream(d.client, [message(b.id, 1, handBatch(ascending(0, 65), { zero: 'all' }))]).done;
    expect(zeros.error?.key).toBe('SESSION_QUOTA_EXCEEDED');
    // Images count against the same budget.
    const c = await prepared(d.client);
    await expectFerryRejection(upload(d.client, [chunk(c.id, 'core-1.img', Buffer.alloc(65 * PAGE_SIZE))]), 'SESSION_QUOTA_EXCEEDED');
    expect(existsSync(join(c.dir, 'images', 'core-1.img'))).toBe(false);
  });
});

describe('sessions (finding: 10,000 Prepares opened 10,000 sessions that never expire)', () => {
  it('opens at most maxSessionsPerPeer sessions for one peer; the rest get DEST_TOO_MANY_SESSIONS', async () => {
    const d = await dest();
    const results: (FerryError | undefined)[] = [];
    for (let i = 0; i < 1000; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, () =>
          d.client.prepare(prepareRequest()).then(
            () => undefined,
            (e: unknown) => e as FerryError,
          ),
        ),
      );
      results.push(...batch);
    }
    const opened = results.filter((e) => e === undefined).length;
    expect(opened).toBe(16);
    expect(results.filter((e) => e?.key === 'DEST_TOO_MANY_SESSIONS')).toHaveLength(1000 - 16);
    expect(readdirSync(d.workDir).filter((n) => n !== 'logs' && n !== 'journal' && !n.startsWith('.'))).toHaveLength(16);
  });

  it('bounds the sessions of the agent as a whole too', async () => {
    const d = await dest({ maxSessions: 3, maxSessionsPerPeer: 10 });
    for (let i = 0; i < 3; i++) await prepared(d.client);
    const e = await expectFerryRejection(d.client.prepare(prepareRequest()), 'DEST_TOO_MANY_SESSIONS');
    expect(e.detail).toContain('allows 3');
  });

  it('aborts a session that stays idle while receiving, which frees its slot', async () => {
    const d = await dest({ sessionIdleMs: 300, maxSessionsPerPeer: 1 });
    const a = await prepared(d.client);
    await expectFerryRejection(d.client.prepare(prepareRequest()), 'DEST_TOO_MANY_SESSIONS');
    await waitUntil(() => !existsSync(a.dir), 5_000, 'the idle session removed');
    expect(await d.client.abort({ migrationId: a.id, epoch: EPOCH, reason: 'test' })).toMatchObject({ existed: true, killedRestoredCopy: false }); // remembered as aborted
    await prepared(d.client);
  });

  it('a session that keeps hearing from its source does not expire', async () => {
    const d = await dest({ sessionIdleMs: 400 });
    const a = await prepared(d.client);
    const s = sender(d.client, a.id);
    for (let i = 0; i < 8; i++) {
      await s.send(TASK, 0, handBatch([i]));
      await s.flush();
      await new Promise((r) => setTimeout(r, 100));
    }
    await s.finish();
    expect(existsSync(a.dir)).toBe(true);
  });
});

describe('streams (finding: 2,000 idle page streams stayed open)', () => {
  it('of 2,000 streams opened at once, keeps maxStreams open and refuses the rest with DEST_TOO_MANY_STREAMS', async () => {
    const d = await dest({ maxStreams: 8, maxStreamsPerPeer: 8, streamIdleMs: 60_000 });
    const calls = Array.from({ length: 2000 }, () => rawPageStream(d.client, [], false));
    const refused: string[] = [];
    for (const c of calls) void c.done.then((r) => r.error && refused.push(r.error.key));
    await waitUntil(() => refused.length >= 1992, 20_000, '1,992 refusals');
    await new Promise((r) => setTimeout(r, 200)); // no more come
    expect(refused).toHaveLength(1992);
    expect(new Set(refused)).toEqual(new Set(['DEST_TOO_MANY_STREAMS']));
    // A stream its client cancels frees its slot at once.
    for (const c of calls) c.call.cancel();
    const a = await prepared(d.client);
    let stored = false;
    for (let attempt = 0; attempt < 50 && !stored; attempt++) {
      const r = await rawPageStream(d.client, [message(a.id, 1, handBatch([1]))]).done;
      stored = r.error === undefined && r.acks.length === 1;
      if (!stored) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(stored).toBe(true);
  });

  it('ends a page stream or an upload that stays idle (STREAM_IDLE_TIMEOUT), which frees its slot', async () => {
    const d = await dest({ maxStreams: 2, maxStreamsPerPeer: 2, streamIdleMs: 300 });
    const t0 = performance.now();
    const pages = rawPageStream(d.client, [], false);
    const call = (d.client.raw.UploadImages as (cb: grpc.requestCallback<m.UploadImagesResponse>) => grpc.ClientWritableStream<m.ImageChunk>)(() => undefined);
    const uploaded = new Promise<FerryError>((resolve) =>
      call.on('status', (st: grpc.StatusObject) => resolve(fromServiceError(Object.assign(new Error(st.details), st), new FerryError('INTERNAL')))),
    );
    await expectFerryRejection(rawPageStream(d.client, [], false).done.then((r) => Promise.reject(r.error ?? new Error('no error'))), 'DEST_TOO_MANY_STREAMS');
    const [p, u] = await within(Promise.all([pages.done, uploaded]), 10_000, 'idle streams ended');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(p.error?.key).toBe('STREAM_IDLE_TIMEOUT');
    expect(u.key).toBe('STREAM_IDLE_TIMEOUT');
    // The slots are free again: a stream that talks stores its pages.
    const a = await prepared(d.client);
    const s = sender(d.client, a.id);
    await s.send(TASK, 0, handBatch([1]));
    await s.finish();
  });
});

describe('required_pids (finding: 2,000,000 entries blocked the event loop for 5 s)', () => {
  it('refuses an over-long list at once and a duplicate, with REQUEST_INVALID', async () => {
    const d = await dest();
    const req = prepareRequest({ requiredPids: Array.from({ length: 2_000_000 }, (_, i) => (i % 4_000_000) + 1) });
    const t0 = performance.now();
    const slow = d.client.prepare(req).then(
      () => undefined,
      (e: unknown) => e as FerryError,
    );
    // Another client's call meanwhile is answered (the event loop is not held for seconds).
    const t1 = performance.now();
    await d.client.negotiate({ source: sourcePeer([1]) });
    const negotiateMs = performance.now() - t1;
    const e = await slow;
    const prepareMs = performance.now() - t0;
    console.log(`2,000,000 required pids: refused in ${prepareMs.toFixed(0)} ms; a Negotiate meanwhile took ${negotiateMs.toFixed(0)} ms`);
    expect(e).toBeInstanceOf(FerryError);
    expect(e?.key).toBe('REQUEST_INVALID');
    expect(e?.detail).toContain('required_pids');
    expect(prepareMs).toBeLessThan(4_000);
    expect(existsSync(join(d.workDir, req.migrationId))).toBe(false);
    await expectFerryRejection(d.client.prepare(prepareRequest({ requiredPids: [4_000_001, 4_000_002, 4_000_001] })), 'REQUEST_INVALID');
    await expectFerryRejection(d.client.prepare(prepareRequest({ requiredPids: [0] })), 'REQUEST_INVALID');
  });
});

describe('oversized strings and error trailers (finding: a 100,000-character name wedged the connection)', () => {
  const long = 'x'.repeat(100_000);

  it('answers every call with a bounded error, and the connection serves the next calls', async () => {
    const lines: string[] = [];
    const d = await dest({}, createLogger({ side: 'dest' }, (l) => lines.push(l), 'debug'));
    const a = await prepared(d.client);
    const image = await within(upload(d.client, [chunk(a.id, long, Buffer.from('x'))]).catch((e: unknown) => e as FerryError), 5_000, 'UploadImages');
    expect((image as FerryError).key).toBe('IMAGE_INVALID');
    expect(((image as FerryError).detail ?? '').length).toBeLessThan(1200);
    await within(d.client.negotiate({ source: sourcePeer([1]) }), 5_000, 'Negotiate after the oversized error');

    const calls: [() => Promise<unknown>, FerryError['key']][] = [
      [() => d.client.commit({ migrationId: long, epoch: EPOCH }), 'BAD_ARGUMENT'],
      [() => d.client.abort({ migrationId: long, epoch: EPOCH, reason: '' }), 'BAD_ARGUMENT'],
      [() => d.client.restore({ migrationId: long, epoch: EPOCH, pages: [], timeoutMs: 0, commitLeaseMs: 0 }), 'BAD_ARGUMENT'],
      [() => d.client.prepare(prepareRequest({ migrationId: long })), 'BAD_ARGUMENT'],
      [() => d.client.prepare(prepareRequest({ taskName: long })), 'REQUEST_INVALID'],
      [() => d.client.abort({ migrationId: a.id, epoch: EPOCH, reason: long }), 'REQUEST_INVALID'],
      [() => d.client.negotiate({ source: { ...sourcePeer([1]), hostname: long } }), 'REQUEST_INVALID'],
      [() => d.client.restore({ migrationId: a.id, epoch: EPOCH, pages: [{ pagemapImage: long, task: 1, hashes: Buffer.alloc(0) }], timeoutMs: 0, commitLeaseMs: 0 }), 'REQUEST_INVALID'],
    ];
    for (const [call, key] of calls) {
      const e = await within(expectFerryRejection(call(), key), 5_000, key);
      expect(JSON.stringify(e.toJSON()).length).toBeLessThan(4096);
    }
    const stream = await within(rawPageStream(d.client, [message(long, 1, handBatch([1]))]).done, 5_000, 'StreamPages');
    expect(stream.error?.key).toBe('BAD_ARGUMENT');
    await within(d.client.negotiate({ source: sourcePeer([1]) }), 5_000, 'Negotiate at the end');
    expect(existsSync(a.dir)).toBe(true); // none of it touched the session
    // The agent's log never carries the whole string either.
    expect(lines.length).toBeGreaterThan(0);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(8192);
  });
});

describe('epochs (finding: a wrong epoch revealed the session epoch; committed ids skipped the check)', () => {
  const EPOCH_OF_SESSION = '12345678901234567890';

  it('refuses another epoch on every call with SESSION_EPOCH_MISMATCH (FAILED_PRECONDITION), never telling the right one', async () => {
    const d = await dest();
    const a = await prepared(d.client, { epoch: EPOCH_OF_SESSION });
    const wrong = '12345678901234567891';
    const rejections: (() => Promise<unknown>)[] = [
      () => rawPageStream(d.client, [message(a.id, 1, handBatch([1]), wrong)]).done.then((r) => Promise.reject(r.error ?? new Error('no error'))),
      () => upload(d.client, [chunk(a.id, 'core-1.img', Buffer.from('x'))], wrong),
      () => d.client.restore({ migrationId: a.id, epoch: wrong, pages: [], timeoutMs: 0, commitLeaseMs: 0 }),
      () => d.client.commit({ migrationId: a.id, epoch: wrong }),
      () => d.client.abort({ migrationId: a.id, epoch: wrong, reason: 'not mine' }),
    ];
    for (const p of rejections) {
      const e = await expectFerryRejection(p(), 'SESSION_EPOCH_MISMATCH');
      expect((e.cause as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(JSON.stringify(e.toJSON())).not.toContain(EPOCH_OF_SESSION);
      expect(JSON.stringify(e.toJSON())).not.toContain(wrong);
    }
    expect(existsSync(a.dir)).toBe(true); // the wrong epoch aborted nothing
    expect(await d.client.abort({ migrationId: a.id, epoch: EPOCH_OF_SESSION, reason: 'test' })).toMatchObject({ existed: true });
  });

  it('refuses an unset epoch (0) at Prepare', async () => {
    const d = await dest();
    await expectFerryRejection(d.client.prepare(prepareRequest({ epoch: '0' })), 'REQUEST_INVALID');
  });
});

describe('durations (finding: 2^32-1 ms overflowed setTimeout and fired at once)', () => {
  it('refuses a timeout_ms or commit_lease_ms out of range with REQUEST_INVALID, leaving the session as it was', async () => {
    const d = await dest();
    const a = await prepared(d.client);
    for (const over of [{ timeoutMs: 2 ** 32 - 1 }, { commitLeaseMs: 2 ** 32 - 1 }, { commitLeaseMs: 3_600_001 }]) {
      const e = await expectFerryRejection(d.client.restore({ migrationId: a.id, epoch: EPOCH, pages: [], timeoutMs: 1000, commitLeaseMs: 1000, ...over }), 'REQUEST_INVALID');
      expect(e.phase).toBe('restore');
    }
    expect(existsSync(a.dir)).toBe(true);
    // Still receiving: a valid Restore goes on to its own checks.
    await expectFerryRejection(d.client.restore({ migrationId: a.id, epoch: EPOCH, pages: [], timeoutMs: 1000, commitLeaseMs: 1000 }), 'IMAGE_INVALID');
  });
});

describe('the batch sequence (finding: a repeated seq was reported as a wrong hash)', () => {
  it.each([
    ['repeated', [1, 1]],
    ['going back', [5, 3]],
  ])('refuses a %s seq with PAGE_SEQ_OUT_OF_ORDER', async (_name, seqs) => {
    const d = await dest();
    const a = await prepared(d.client);
    const r = await rawPageStream(d.client, [message(a.id, seqs[0]!, handBatch([1])), message(a.id, seqs[1]!, handBatch([2]))]).done;
    expect(r.acks.map((x) => x.seq)).toEqual([String(seqs[0])]);
    expect(r.error?.key).toBe('PAGE_SEQ_OUT_OF_ORDER');
  });
});

describe('pid probing (finding: Prepare told which pids exist on the dest)', () => {
  it('refuses taken pids without naming them, and bounds the list', async () => {
    const lines: string[] = [];
    const d = await dest({}, createLogger({ side: 'dest' }, (l) => lines.push(l), 'debug'));
    const e = await expectFerryRejection(d.client.prepare(prepareRequest({ requiredPids: [4_000_000, process.pid] })), 'TASK_PIDS_TAKEN_ON_DEST');
    expect(JSON.stringify(e.toJSON())).not.toContain(String(process.pid));
    expect(lines.some((l) => l.includes(String(process.pid)))).toBe(true); // the dest's own log says which
    await expectFerryRejection(d.client.prepare(prepareRequest({ requiredPids: Array.from({ length: 4097 }, (_, i) => 3_000_000 + i) })), 'REQUEST_INVALID');
  });
});

describe('Prepare of a committed or existing id', () => {
  it('gives a repeated Prepare the same session, another epoch SESSION_CONFLICT', async () => {
    const d = await dest();
    const req = prepareRequest({ migrationId: randomUUID() });
    const first = await d.client.prepare(req);
    expect((await d.client.prepare(req)).workDir).toBe(first.workDir);
    await expectFerryRejection(d.client.prepare({ ...req, epoch: '2' }), 'SESSION_CONFLICT');
  });
});

describe('external mounts in Negotiate (the preflight of mount paths)', () => {
  it('answers which of the paths are missing here and offers mount-paths; bad or too many paths are REQUEST_INVALID', async () => {
    const { client } = await dest();
    const source = sourcePeer([1]);
    const answer = await client.negotiate({ source, externalMounts: ['/', '/tmp', '/no/such/ferry/path'] });
    expect(answer.missingMounts).toEqual(['/no/such/ferry/path']);
    expect(answer.dest.features).toContain('mount-paths');
    expect((await client.negotiate({ source })).missingMounts).toEqual([]);
    for (const p of ['tmp', '/tmp/../etc', '/tmp/', `/${'x'.repeat(5000)}`]) await expectFerryRejection(client.negotiate({ source, externalMounts: [p] }), 'REQUEST_INVALID');
    await expectFerryRejection(client.negotiate({ source, externalMounts: Array<string>(513).fill('/tmp') }), 'REQUEST_INVALID');
  });
});
