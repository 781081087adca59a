/**
 * The Dest service over a real gRPC server on 127.0.0.1:0, driven by the source's DestClient and GrpcPageStream:
 * Ferry codes travel over the wire, pages are acknowledged under a credit window and stored, bad input is
 * refused. Nothing here needs root or CRIU (Negotiate probes CRIU, and either answer is fine).
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DestService } from '../../dest-agent/dest-service.js';
import { createDestMetrics, type DestMetrics } from '../../dest-agent/dest-metrics.js';
import { encodePagemap, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import { batchPageCount, PAGE_KIND_DATA, PAGE_KIND_ZERO, PageBatchEncoder, writePageNumber, type PageBatch } from '../../shared/transport/page-batch.js';
import { serverCredentials } from '../../shared/transport/credentials.js';
import { ferryProto, SERVER_OPTIONS } from '../../shared/transport/proto.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { DestClient } from '../../source-agent/dest-client.js';
import { GrpcPageStream } from '../../source-agent/grpc-page-stream.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const EPOCH = '1';
const TASK = 1;

let workDir: string;
let server: grpc.Server;
let service: DestService;
let metrics: DestMetrics;
let client: DestClient;

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ferry-unit-dest-'));
  metrics = createDestMetrics(new Registry());
  service = new DestService({ workDir, log: silentLogger, metrics });
  server = new grpc.Server(SERVER_OPTIONS);
  server.addService(ferryProto().Dest.service, service.handlers());
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', serverCredentials(INSECURE_LOOPBACK), (err, p) => (err ? reject(err) : resolve(p)));
  });
  client = new DestClient(`127.0.0.1:${port}`, INSECURE_LOOPBACK); // the service's logic; TLS: test/integration/mutual-tls.test.ts
  await client.connect(5_000);
});

afterAll(async () => {
  client?.close();
  await service?.close();
  if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

const source = (protocolVersions: number[]): m.PeerInfo => ({
  ferryVersion: '0.1.0',
  protocolVersions,
  pageSize: PAGE_SIZE,
  arch: process.arch,
  kernel: 'test',
  hostname: 'unit-test',
  trackers: ['hash'],
  criuVersion: '',
  criuProblem: 'not probed in this test',
  features: [],
});

const prepareRequest = (over: Partial<m.PrepareRequest> = {}): m.PrepareRequest => ({
  migrationId: randomUUID(),
  epoch: EPOCH,
  protocolVersion: 1,
  requiredPids: [],
  expectedBytes: '0',
  taskName: 'unit-test',
  ...over,
});

/** A fresh session on the dest; returns its id and directory. */
async function prepared(): Promise<{ id: string; dir: string }> {
  const req = prepareRequest();
  const res = await client.prepare(req);
  return { id: req.migrationId, dir: res.workDir };
}

// One level file while the pages arrive in address order (see dest-agent/page-store.ts).
const storePath = (dir: string, task = TASK): string => join(dir, 'pages', `task-${task}.L0.pages`);

/** A page whose bytes name it: two pages never share content. */
function content(page: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE, page & 0xff);
  b.writeDoubleLE(page, 0);
  return b;
}

/** One small batch built by hand, with correct hashes unless told otherwise. */
function handBatch(pages: readonly number[], opts: { zero?: ReadonlySet<number>; breakHashOf?: number } = {}): PageBatch {
  const zero = opts.zero ?? new Set<number>();
  const pageNumbers = Buffer.alloc(pages.length * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p));
  const bytes = pages.map((p) => (zero.has(p) ? Buffer.alloc(PAGE_SIZE) : content(p)));
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  hashPages(Buffer.concat(bytes), pages.length, PAGE_SIZE, hashes);
  const broken = opts.breakHashOf === undefined ? -1 : pages.indexOf(opts.breakHashOf);
  if (broken >= 0) hashes[broken * HASH_BYTES]! ^= 0x80;
  return {
    pageNumbers,
    hashes,
    kinds: Buffer.from(pages.map((p) => (zero.has(p) ? PAGE_KIND_ZERO : PAGE_KIND_DATA))),
    data: Buffer.concat(bytes.filter((_, i) => !zero.has(pages[i]!))),
  };
}

const pagesReceived = async (): Promise<number> => (await metrics.pagesReceived.get()).values[0]?.value ?? 0;

/** Client-streams image chunks to UploadImages, the way source-agent/migration/upload-images.ts does. */
function upload(chunks: readonly Omit<m.ImageChunk, 'epoch'>[]): Promise<m.UploadImagesResponse> {
  return new Promise((resolve, reject) => {
    const call = (client.raw.UploadImages as (cb: grpc.requestCallback<m.UploadImagesResponse>) => grpc.ClientWritableStream<m.ImageChunk>)((err, res) => {
      if (err) reject(fromServiceError(err, new FerryError('IMAGE_UPLOAD_FAILED', { detail: err.message, cause: err })));
      else resolve(res!);
    });
    for (const c of chunks) call.write({ ...c, epoch: EPOCH });
    call.end();
  });
}

const chunk = (migrationId: string, name: string, data: Buffer, offset = 0, totalSize = data.length): Omit<m.ImageChunk, 'epoch'> => ({
  migrationId,
  name,
  data,
  offset: String(offset),
  totalSize: String(totalSize),
});

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

  it('refuses pids in use on the dest (this very process), with the code carried over gRPC', async () => {
    const req = prepareRequest({ requiredPids: [process.pid] });
    const e = await expectFerryRejection(client.prepare(req), 'TASK_PIDS_TAKEN_ON_DEST');
    expect(e).toMatchObject({ side: 'dest', phase: 'prepare' });
    expect(e.detail).toContain(String(process.pid));
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
    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: false, alreadyCommitted: false, killedRestoredCopy: false });
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

  it('aborts once, removes the session directory, and says so when asked again', async () => {
    const { id, dir } = await prepared();
    const sender = new GrpcPageStream(client, { migrationId: id, epoch: EPOCH, windowBytes: 64 * 1024, signal: new AbortController().signal, phase: () => 'precopy' });
    await sender.send(TASK, 0, handBatch([1, 2, 3]));
    await sender.finish();
    expect(existsSync(storePath(dir))).toBe(true);

    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    expect(existsSync(dir)).toBe(false);
    expect(await client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toEqual({ existed: false, alreadyCommitted: false, killedRestoredCopy: false });
    await expectFerryRejection(client.commit({ migrationId: id, epoch: EPOCH }), 'SESSION_NOT_FOUND');
  });
});
