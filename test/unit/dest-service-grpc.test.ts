/**
 * The Dest service over a real gRPC server on 127.0.0.1:0, driven by the source's DestClient and GrpcPageStream:
 * Ferry codes travel over the wire, pages are acknowledged under a credit window and stored, bad input is
 * refused. Nothing here needs root or CRIU (Negotiate probes CRIU, and either answer is fine).
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePagemap, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import { batchPageCount, PageBatchEncoder, type PageBatch } from '../../shared/transport/page-batch.js';
import type { DestClient } from '../../source-agent/dest-client.js';
import { GrpcPageStream } from '../../source-agent/grpc-page-stream.js';
import { PageCompression } from '../../source-agent/pages/page-compression.js';
import { zstdProblem } from '../../shared/native/zstd.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { chunk, content, EPOCH, handBatch, prepareRequest, sourcePeer as source, startDest, upload as uploadTo, type DestUnderTest } from '../support/dest-grpc.js';

const TASK = 1;

let dest: DestUnderTest;
let workDir: string;
let client: DestClient;

beforeAll(async () => {
  dest = await startDest();
  ({ workDir, client } = dest);
});

afterAll(async () => {
  await dest?.close();
});

/** A fresh session on the dest; returns its id and directory. */
async function prepared(): Promise<{ id: string; dir: string }> {
  const req = prepareRequest();
  const res = await client.prepare(req);
  return { id: req.migrationId, dir: res.workDir };
}

// One level file while the pages arrive in address order (see dest-agent/page-store.ts).
const storePath = (dir: string, task = TASK): string => join(dir, 'pages', `task-${task}.L0.pages`);

const pagesReceived = async (): Promise<number> => (await dest.metrics.pagesReceived.get()).values[0]?.value ?? 0;

const upload = (chunks: readonly Omit<m.ImageChunk, 'epoch'>[]): Promise<m.UploadImagesResponse> => uploadTo(client, chunks);

describe('Negotiate', () => {
  it('answers the highest version both sides speak, and 0 when there is none', async () => {
    const ok = await client.negotiate({ source: source([1]) });
    expect(ok.protocolVersion).toBe(1);
    expect(ok.dest.protocolVersions).toContain(1);
    expect(ok.dest.pageSize).toBe(PAGE_SIZE);
    expect(ok.dest.arch).toBe(process.arch);
    const none = await client.negotiate({ source: source([7, 8]) });
    expect(none.protocolVersion).toBe(0);
  });

  it('accepts the page codecs offered that it decodes, none unasked (issue 15)', async () => {
    expect((await client.negotiate({ source: source([1]), pageCodecs: ['lz4', 'zstd'] })).pageCodecs).toEqual(zstdProblem() ? [] : ['zstd']);
    expect((await client.negotiate({ source: source([1]) })).pageCodecs).toEqual([]);
    await expectFerryRejection(client.negotiate({ source: source([1]), pageCodecs: Array<string>(9).fill('zstd') }), 'REQUEST_INVALID');
  });
});

describe('Prepare', () => {
  it('opens a session directory and is idempotent for the same epoch', async () => {
    const req = prepareRequest();
    const res = await client.prepare(req);
    expect(res.workDir).toBe(join(workDir, req.migrationId));
    expect(existsSync(join(res.workDir, 'images'))).toBe(true);
    expect(BigInt(res.freeBytes)).toBeGreaterThan(0n);
    expect((await client.prepare(req)).workDir).toBe(res.workDir);
    const e = await expectFerryRejection(client.prepare({ ...req, epoch: '2' }), 'SESSION_CONFLICT');
    expect(e.retryable).toBe(true);
  });

  it('refuses a malformed migration id with BAD_ARGUMENT', async () => {
    for (const migrationId of ['../../etc', 'short', '', 'a'.repeat(65), 'has space in it']) {
      const e = await expectFerryRejection(client.prepare(prepareRequest({ migrationId })), 'BAD_ARGUMENT');
      expect(e).toMatchObject({ side: 'dest', phase: 'prepare' });
    }
    expect(existsSync(join(workDir, '..', 'etc', 'images'))).toBe(false);
  });

  it('refuses a protocol version the dest does not speak', async () => {
    await expectFerryRejection(client.prepare(prepareRequest({ protocolVersion: 99 })), 'PROTOCOL_MISMATCH');
  });

  it('refuses pids in use on the dest (this very process), with the code carried over gRPC, never naming them', async () => {
    const req = prepareRequest({ requiredPids: [process.pid] });
    const e = await expectFerryRejection(client.prepare(req), 'TASK_PIDS_TAKEN_ON_DEST');
    expect(e).toMatchObject({ side: 'dest', phase: 'prepare' });
    // Issue 9: the answer naming the taken pids let any peer probe which pids exist here (the dest's log names them).
    expect(JSON.stringify(e.toJSON())).not.toContain(String(process.pid));
    expect(existsSync(join(workDir, req.migrationId))).toBe(false);
  });

  it('refuses a migration larger than the free disk', async () => {
    await expectFerryRejection(client.prepare(prepareRequest({ expectedBytes: String(2n ** 62n) })), 'DEST_PREPARE_FAILED');
  });
});

describe('StreamPages', () => {
  it('stores every page under a 64 KiB window, acknowledging before more is sent', async () => {
    const { id, dir } = await prepared();
    const controller = new AbortController();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: controller.signal, phase: () => 'precopy' });
    const before = await pagesReceived();
    let sentPages = 0;
    let windowKept = true;
    const send = async (batch: PageBatch): Promise<void> => {
      await sender.send(TASK, 0, batch);
      sentPages += batchPageCount(batch);
      // A batch larger than the window goes alone: once send returns, everything before it was acknowledged.
      if (batch.data.length > 64 * 1024 && (await pagesReceived()) - before < sentPages - batchPageCount(batch)) windowKept = false;
    };

    // Full batches of 256 pages (1 MiB, far over the window) through the encoder, one zero page in 8 ...
    const encoder = new PageBatchEncoder(PAGE_SIZE, send);
    const total = 1000;
    const hash = Buffer.alloc(HASH_BYTES);
    for (let p = 0; p < total; p++) {
      const isZero = p % 8 === 0;
      const bytes = isZero ? Buffer.alloc(PAGE_SIZE) : content(p);
      hashPages(bytes, 1, PAGE_SIZE, hash);
      await encoder.add(p, hash, 0, bytes, 0, isZero);
    }
    await encoder.flush();
    // ... and small batches (16 KiB) of which several fit the window at once.
    for (let p = total; p < total + 64; p += 4) await send(handBatch([p, p + 1, p + 2, p + 3]));
    await sender.finish();

    expect(windowKept).toBe(true);
    expect(sender.pagesSent).toBe(total + 64);
    expect(sender.bytesSent).toBe((total - total / 8 + 64) * PAGE_SIZE);
    expect((await pagesReceived()) - before).toBe(total + 64);
    // Zero pages are stored as zeros: one slot per page.
    const store = await readFile(storePath(dir));
    expect(store.length).toBe((total + 64) * PAGE_SIZE);
    expect(store.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE).equals(content(5))).toBe(true);
    expect(store.subarray(8 * PAGE_SIZE, 9 * PAGE_SIZE).equals(Buffer.alloc(PAGE_SIZE))).toBe(true);
    expect(store.subarray((total + 63) * PAGE_SIZE).equals(content(total + 63))).toBe(true);

    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('fails the stream with PAGE_INTEGRITY when a page does not match its hash, storing none of its batch', async () => {
    const { id, dir } = await prepared();
    const controller = new AbortController();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: controller.signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1, 2]));
    await sender.flush();
    await sender.send(TASK, 0, handBatch([3, 4, 5], { breakHashOf: 4 }));
    const e = await expectFerryRejection(sender.finish(), 'PAGE_INTEGRITY');
    expect(e.side).toBe('dest');
    expect(e.detail).toContain('page 4');
    // A later send on the broken stream fails the same way.
    await expectFerryRejection(sender.send(TASK, 0, handBatch([6])), 'PAGE_INTEGRITY');
    expect((await stat(storePath(dir))).size).toBe(2 * PAGE_SIZE);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('refuses pages for a session it does not know', async () => {
    const sender = new GrpcPageStream(client, { migrationId: randomUUID(), epoch: EPOCH, windowBytes: 64 * 1024, signal: new AbortController().signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1]));
    await expectFerryRejection(sender.finish(), 'SESSION_NOT_FOUND');
  });

  it('stores zstd batches after decoding them, each page checked against its hash (issue 15)', async () => {
    const { id, dir } = await prepared();
    const compression = new PageCompression({ mode: 'zstd', codecs: ['zstd'] });
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 1 << 20, signal: new AbortController().signal, phase: () => 'precopy', compression });
    const pages = Array.from({ length: 64 }, (_, i) => i);
    await sender.send(TASK, 0, handBatch(pages, { zero: new Set([3, 9]) }));
    await sender.send(TASK, 0, handBatch([64, 65]));
    await sender.finish();
    const store = await readFile(storePath(dir));
    for (const p of [0, 5, 63, 65]) expect(store.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE).equals(content(p))).toBe(true);
    expect(store.subarray(3 * PAGE_SIZE, 4 * PAGE_SIZE).equals(Buffer.alloc(PAGE_SIZE))).toBe(true);
    expect(compression.rawBytes).toBe(64 * PAGE_SIZE);
    expect(compression.wireBytes).toBeLessThan(compression.rawBytes / 10);
    // The dest acknowledges the raw bytes it stored: the cost model's store rate is of page bytes.
    expect(sender.storedBytes).toBe(64 * PAGE_SIZE);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('refuses a corrupt compressed payload with PAGE_PAYLOAD_INVALID, storing none of it (issue 15)', async () => {
    const { id, dir } = await prepared();
    const garbage = {
      encode: (_round: number, data: Buffer) => ({ codec: 'zstd' as const, payload: Buffer.from('\x28\xb5\x2f\xfd garbage after a zstd magic'), rawBytes: data.length, compressMs: 0 }),
      sent: () => undefined,
      acked: () => undefined,
    } as unknown as PageCompression;
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 1 << 20, signal: new AbortController().signal, phase: () => 'precopy', compression: garbage });
    await sender.send(TASK, 0, handBatch([1, 2]));
    const e = await expectFerryRejection(sender.finish(), 'PAGE_PAYLOAD_INVALID');
    expect(e.side).toBe('dest');
    expect(existsSync(storePath(dir)) ? (await stat(storePath(dir))).size : 0).toBe(0);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('a cancelled sender rejects with CANCELLED', async () => {
    const { id } = await prepared();
    const controller = new AbortController();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: controller.signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1]));
    controller.abort();
    await expectFerryRejection(sender.finish(), 'CANCELLED');
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });
});

describe('UploadImages', () => {
  it('stores a valid image in chunks', async () => {
    const { id, dir } = await prepared();
    const image = Buffer.from('0123456789abcdef');
    const res = await upload([chunk(id, 'core-1.img', image.subarray(0, 10), 0, 16), chunk(id, 'core-1.img', image.subarray(10), 10, 16), chunk(id, 'empty.img', Buffer.alloc(0))]);
    expect(res).toEqual({ files: 2, bytes: '16' });
    expect((await readFile(join(dir, 'images', 'core-1.img'))).equals(image)).toBe(true);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it.each(['../x', '../../escape.img', 'a/b.img', '.hidden', '', 'pages-1.img', 'x'.repeat(129)])('refuses the image name %j with IMAGE_INVALID', async (name) => {
    const { id, dir } = await prepared();
    const e = await expectFerryRejection(upload([chunk(id, name, Buffer.from('x'))]), 'IMAGE_INVALID');
    expect(e.side).toBe('dest');
    expect(existsSync(join(dir, 'x'))).toBe(false);
    expect(existsSync(join(workDir, 'escape.img'))).toBe(false);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('refuses a chunk that does not continue its image', async () => {
    const { id } = await prepared();
    await expectFerryRejection(upload([chunk(id, 'mm-1.img', Buffer.from('abc'), 0, 6), chunk(id, 'mm-1.img', Buffer.from('def'), 4, 6)]), 'IMAGE_INVALID');
    await expectFerryRejection(upload([chunk(id, 'mm-2.img', Buffer.from('abcdef'), 0, 3)]), 'IMAGE_INVALID');
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });
});

describe('Restore, Commit and Abort', () => {
  it('refuses to restore without inventory.img and pstree.img, keeping the session', async () => {
    const { id, dir } = await prepared();
    await expectFerryRejection(client.restore({ migrationId: id, epoch: EPOCH, pages: [], timeoutMs: 1000, commitLeaseMs: 1000 }), 'IMAGE_INVALID');
    expect(existsSync(dir)).toBe(true);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('a restore the page source refuses goes to aborted: the session and its files are gone', async () => {
    const { id, dir } = await prepared();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: new AbortController().signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1, 2]));
    await sender.finish();
    // The dump names page 3, which never arrived: the store-backed chain refuses it before CRIU runs.
    const pagemap = encodePagemap({ pagesId: 1, entries: [{ vaddr: 3n * 4096n, nrPages: 1, flags: PE_PRESENT }] });
    await upload([chunk(id, 'inventory.img', Buffer.from('i')), chunk(id, 'pstree.img', Buffer.from('p')), chunk(id, 'pagemap-1.img', pagemap)]);
    const pages = [{ pagemapImage: 'pagemap-1.img', task: TASK, hashes: Buffer.alloc(HASH_BYTES) }];
    await expectFerryRejection(client.restore({ migrationId: id, epoch: EPOCH, pages, timeoutMs: 1000, commitLeaseMs: 1000 }), 'REBUILD_PAGE_MISSING');
    expect(existsSync(dir)).toBe(false);
    // Remembered as aborted (its journal says so): a late Commit is refused, never "not found".
    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    await expectFerryRejection(client.commit({ migrationId: id, epoch: EPOCH }), 'COMMIT_REJECTED');
  });

  it('refuses to commit a session that is not restored', async () => {
    const { id, dir } = await prepared();
    const e = await expectFerryRejection(client.commit({ migrationId: id, epoch: EPOCH }), 'COMMIT_REJECTED');
    expect(e).toMatchObject({ side: 'dest', phase: 'commit' });
    expect(existsSync(dir)).toBe(true);
    await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test done' });
  });

  it('refuses to commit a session it does not know', async () => {
    await expectFerryRejection(client.commit({ migrationId: randomUUID(), epoch: EPOCH }), 'SESSION_NOT_FOUND');
  });

  it('refuses a Prepare that arrives after the Abort of its id (a source that gave up on a hung dest; issue 10)', async () => {
    const migrationId = randomUUID();
    expect(await client.abort({ migrationId, epoch: EPOCH, reason: 'rollback after prepare' })).toMatchObject({ existed: false });
    await expectFerryRejection(client.prepare(prepareRequest({ migrationId })), 'SESSION_CONFLICT');
  });

  it('aborts once, removes the session directory, and says so when asked again', async () => {
    const { id, dir } = await prepared();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: new AbortController().signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1, 2, 3]));
    await sender.finish();
    expect(existsSync(storePath(dir))).toBe(true);

    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    expect(existsSync(dir)).toBe(false);
    // Asked again: the session is remembered as aborted, and a Commit after it is refused.
    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    await expectFerryRejection(client.commit({ migrationId: id, epoch: EPOCH }), 'COMMIT_REJECTED');
  });
});
