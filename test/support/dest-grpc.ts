/**
 * A real Dest service on 127.0.0.1:0 for the gRPC tests, the source's DestClient connected to it, and the
 * hand-made requests those tests send (batches with correct hashes unless told otherwise, image chunks).
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { DestService, type DestOptions } from '../../dest-agent/dest-service.js';
import { createDestMetrics, type DestMetrics } from '../../dest-agent/dest-metrics.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import { PAGE_KIND_DATA, PAGE_KIND_ZERO, writePageNumber, type PageBatch } from '../../shared/transport/page-batch.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { startAgentServer } from '../../shared/transport/agent-server.js';
import { ferryProto } from '../../shared/transport/proto.js';
import { DestClient } from '../../source-agent/dest-client.js';
import { PageChannelServer } from '../../dest-agent/page-channel/page-channel-server.js';

export const EPOCH = '1';

export interface DestUnderTest {
  workDir: string;
  service: DestService;
  metrics: DestMetrics;
  client: DestClient;
  address: string;
  /** The page-channel listener, when asked for (`channels: true`). */
  channels?: PageChannelServer;
  /** Closes the client, rolls back the sessions, stops the server, removes the work dir. */
  close(): Promise<void>;
}

/** A Dest service in a fresh work dir (or `over.workDir`, which close() removes too); `over` adds options (limits, a logger). */
export async function startDest(over: Partial<Omit<DestOptions, 'metrics' | 'pageChannels'>> & { channels?: boolean | { helloTimeoutMs: number } } = {}): Promise<DestUnderTest> {
  const workDir = over.workDir ?? (await mkdtemp(join(tmpdir(), 'ferry-unit-dest-')));
  const metrics = createDestMetrics(new Registry());
  const channels = over.channels ? new PageChannelServer(INSECURE_LOOPBACK, over.log ?? silentLogger, 64, over.channels === true ? undefined : over.channels.helloTimeoutMs) : undefined;
  const service = new DestService({ log: silentLogger, metrics, ...over, workDir, ...(channels ? { pageChannels: channels } : {}) });
  await channels?.listen('127.0.0.1', 0, service.channelHost());
  // The agent's own server (interceptors included), in plaintext: TLS is test/integration/mutual-tls.test.ts's.
  const agent = await startAgentServer({
    service: ferryProto().Dest.service,
    handlers: service.handlers(),
    listen: { host: '127.0.0.1', port: 0 },
    registry: new Registry(),
    closeService: async () => {
      await service.close();
      await channels?.close();
    },
    security: INSECURE_LOOPBACK,
    side: 'dest',
  });
  const port = agent.port;
  const address = `127.0.0.1:${port}`;
  const client = new DestClient(address, INSECURE_LOOPBACK); // the service's logic; TLS: test/integration/mutual-tls.test.ts
  await client.connect(5_000);
  return {
    workDir,
    service,
    metrics,
    client,
    address,
    ...(channels ? { channels } : {}),
    close: async () => {
      client.close();
      await agent.close();
      await rm(workDir, { recursive: true, force: true });
    },
  };
}

export const sourcePeer = (protocolVersions: number[]): m.PeerInfo => ({
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

export const prepareRequest = (over: Partial<m.PrepareRequest> = {}): m.PrepareRequest => ({
  migrationId: randomUUID(),
  epoch: EPOCH,
  protocolVersion: 1,
  requiredPids: [],
  expectedBytes: '0',
  taskName: 'unit-test',
  ...over,
});

/** A page whose bytes name it: two pages never share content. */
export function content(page: number): Buffer {
  const b = Buffer.alloc(PAGE_SIZE, page & 0xff);
  b.writeDoubleLE(page, 0);
  return b;
}

/** One batch built by hand, with correct hashes unless told otherwise. */
export function handBatch(pages: readonly number[], opts: { zero?: ReadonlySet<number> | 'all'; breakHashOf?: number } = {}): PageBatch {
  const isZero = (p: number): boolean => opts.zero === 'all' || (opts.zero?.has(p) ?? false);
  const pageNumbers = Buffer.alloc(pages.length * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p));
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  if (opts.zero === 'all') {
    const one = Buffer.alloc(HASH_BYTES);
    hashPages(Buffer.alloc(PAGE_SIZE), 1, PAGE_SIZE, one);
    for (let i = 0; i < pages.length; i++) one.copy(hashes, i * HASH_BYTES);
  } else if (pages.length > 0) {
    hashPages(Buffer.concat(pages.map((p) => (isZero(p) ? Buffer.alloc(PAGE_SIZE) : content(p)))), pages.length, PAGE_SIZE, hashes);
  }
  const broken = opts.breakHashOf === undefined ? -1 : pages.indexOf(opts.breakHashOf);
  if (broken >= 0) hashes[broken * HASH_BYTES]! ^= 0x80;
  return {
    pageNumbers,
    hashes,
    kinds: Buffer.from(pages.map((p) => (isZero(p) ? PAGE_KIND_ZERO : PAGE_KIND_DATA))),
    data: Buffer.concat(pages.filter((p) => !isZero(p)).map(content)),
  };
}

/** Client-streams image chunks to UploadImages, the way source-agent/grpc-image-upload.ts does. */
export function upload(client: DestClient, chunks: readonly Omit<m.ImageChunk, 'epoch'>[], epoch = EPOCH): Promise<m.UploadImagesResponse> {
  return new Promise((resolve, reject) => {
    const call = (client.raw.UploadImages as (cb: grpc.requestCallback<m.UploadImagesResponse>) => grpc.ClientWritableStream<m.ImageChunk>)((err, res) => {
      if (err) reject(fromServiceError(err, new FerryError('IMAGE_UPLOAD_FAILED', { detail: err.message, cause: err })));
      else resolve(res!);
    });
    for (const c of chunks) call.write({ ...c, epoch });
    call.end();
  });
}

export const chunk = (migrationId: string, name: string, data: Buffer, offset = 0, totalSize = data.length): Omit<m.ImageChunk, 'epoch'> => ({
  migrationId,
  name,
  data,
  offset: String(offset),
  totalSize: String(totalSize),
});
