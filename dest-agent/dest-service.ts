/** The Dest gRPC service: sessions, page stream, image upload, restore, commit, abort. */
import * as grpc from '@grpc/grpc-js';
import { existsSync, statfsSync } from 'node:fs';
import { open, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { toStatus } from '../shared/errors/grpc-status.js';
import type { Logger } from '../shared/logging/logger.js';
import { chooseProtocolVersion, localPeerInfo, protocolVersions } from '../shared/peer-info.js';
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import { decodePageBatch } from '../shared/transport/page-batch.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import type * as m from '../shared/transport/messages.js';
import { DestSession } from './session.js';
import { recordRestored } from './leftovers.js';
import { faultArmed } from '../shared/fault-injection.js';
import { buildParentChain, verifyStores } from './image-chain.js';
import { restoreStopped, resumeTree, killTree } from './restore.js';
import type { DestMetrics } from './dest-metrics.js';

const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** The dest writes pages-*.img itself from its page store; a peer may never send one. */
const REBUILT_IMAGE = /^pages-\d+\.img$/;
const MAX_IMAGE_BYTES = 1024 * 1024 * 1024;
const SESSION_ID = /^[A-Za-z0-9-]{8,64}$/;
const COMMITTED_MEMORY_MS = 10 * 60_000;

export interface DestOptions {
  workDir: string;
  log: Logger;
  metrics: DestMetrics;
}

export class DestService {
  private readonly sessions = new Map<string, DestSession>();
  /** Sessions that committed, kept so that a repeated Commit (after a lost reply) still succeeds. */
  private readonly committed = new Map<string, { restoredPid: number; resumedAtUs: bigint }>();

  constructor(private readonly opts: DestOptions) {}

  /** The grpc-js handler table. Every handler maps its error to a status with the Ferry code in a trailer. */
  handlers(): grpc.UntypedServiceImplementation {
    const unary =
      <Req, Res>(fn: (req: Req) => Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
        fn(call.request).then(
          (res) => cb(null, res),
          (e: unknown) => {
            this.opts.log.warn('call failed', { err: e });
            cb(toStatus(e));
          },
        );
      };
    return {
      Negotiate: unary((r: m.NegotiateRequest) => this.negotiate(r)),
      Prepare: unary((r: m.PrepareRequest) => this.prepare(r)),
      Restore: unary((r: m.RestoreRequest) => this.restore(r)),
      Commit: unary((r: m.CommitRequest) => this.commit(r)),
      Abort: unary((r: m.AbortRequest) => this.abort(r)),
      StreamPages: (call: grpc.ServerDuplexStream<m.PageBatchMessage, m.PageAck>) => {
        this.streamPages(call).catch((e: unknown) => {
          this.opts.log.warn('page stream failed', { err: e });
          call.emit('error', toStatus(e));
        });
      },
      UploadImages: (call: grpc.ServerReadableStream<m.ImageChunk, m.UploadImagesResponse>, cb: grpc.sendUnaryData<m.UploadImagesResponse>) => {
        this.uploadImages(call).then(
          (res) => cb(null, res),
          (e: unknown) => {
            this.opts.log.warn('image upload failed', { err: e });
            cb(toStatus(e));
          },
        );
      },
    };
  }

  async negotiate(req: m.NegotiateRequest): Promise<m.NegotiateResponse> {
    const dest = await localPeerInfo();
    return { dest, protocolVersion: chooseProtocolVersion(protocolVersions(), req.source?.protocolVersions ?? []) };
  }

  async prepare(req: m.PrepareRequest): Promise<m.PrepareResponse> {
    if (!SESSION_ID.test(req.migrationId)) throw new FerryError('BAD_ARGUMENT', { side: 'dest', phase: 'prepare', detail: 'malformed migration id' });
    if (!protocolVersions().includes(req.protocolVersion)) {
      throw new FerryError('PROTOCOL_MISMATCH', { side: 'dest', phase: 'prepare', detail: `version ${req.protocolVersion} is not spoken here` });
    }
    const taken = req.requiredPids.filter((pid) => existsSync(`/proc/${pid}`));
    if (taken.length > 0) {
      throw new FerryError('TASK_PIDS_TAKEN_ON_DEST', { side: 'dest', phase: 'prepare', detail: `pids in use on the dest: ${taken.slice(0, 20).join(', ')}` });
    }
    const existing = this.sessions.get(req.migrationId);
    if (existing) {
      if (existing.epoch === BigInt(req.epoch) && existing.state === 'receiving') return { workDir: existing.dir, freeBytes: '0' };
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare' });
    }
    await mkdir(this.opts.workDir, { recursive: true });
    const fs = statfsSync(this.opts.workDir);
    const free = BigInt(fs.bavail) * BigInt(fs.bsize);
    // The store and the rebuilt pages image each hold the task's memory once.
    const needed = BigInt(req.expectedBytes) * 2n;
    if (free < needed) {
      throw new FerryError('DEST_PREPARE_FAILED', {
        side: 'dest',
        phase: 'prepare',
        detail: `${this.opts.workDir} has ${free} bytes free, the migration needs about ${needed}`,
      });
    }
    const session = await DestSession.create(this.opts.workDir, req.migrationId, BigInt(req.epoch), PAGE_SIZE, this.opts.log.child({ migrationId: req.migrationId }));
    this.sessions.set(req.migrationId, session);
    session.log.info('session prepared', { task: req.taskName, expectedBytes: req.expectedBytes, dir: session.dir });
    return { workDir: session.dir, freeBytes: free.toString() };
  }

  private session(id: string, epoch: string, phase: 'precopy' | 'final-delta' | 'restore' | 'commit'): DestSession {
    const s = this.sessions.get(id);
    if (!s) throw new FerryError('SESSION_NOT_FOUND', { side: 'dest', phase, detail: `migration ${id}` });
    if (s.epoch !== BigInt(epoch)) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase, detail: `epoch ${epoch} is not ${s.epoch}` });
    return s;
  }

  async streamPages(call: grpc.ServerDuplexStream<m.PageBatchMessage, m.PageAck>): Promise<void> {
    const scratch = Buffer.allocUnsafe(1024 * HASH_BYTES);
    let lastSeq = -1n;
    // destroyOnReturn false: a plain for-await destroys the call at the end, and the status would never be sent.
    for await (const raw of call.iterator({ destroyOnReturn: false }) as AsyncIterable<m.PageBatchMessage>) {
      const s = this.session(raw.migrationId, raw.epoch, 'precopy');
      if (s.state !== 'receiving') throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'precopy', detail: `session is ${s.state}` });
      const seq = BigInt(raw.seq);
      if (seq <= lastSeq) throw new FerryError('PAGE_INTEGRITY', { side: 'dest', detail: `batch ${seq} after ${lastSeq}` });
      lastSeq = seq;
      const t0 = process.hrtime.bigint();
      const batch = decodePageBatch(raw, s.pageSize);
      const store = await s.store(raw.task);
      await store.put(batch, batch.count > 1024 ? Buffer.allocUnsafe(batch.count * HASH_BYTES) : scratch);
      this.opts.metrics.pagesReceived.inc(batch.count);
      this.opts.metrics.bytesReceived.inc(batch.data.length);
      const storeUs = String((process.hrtime.bigint() - t0) / 1000n);
      if (!call.write({ seq: raw.seq, pages: batch.count, bytes: String(batch.data.length), storeUs })) {
        await new Promise((resolve) => call.once('drain', resolve));
      }
    }
    call.end();
  }

  async uploadImages(call: grpc.ServerReadableStream<m.ImageChunk, m.UploadImagesResponse>): Promise<m.UploadImagesResponse> {
    let files = 0;
    let bytes = 0;
    for await (const chunk of call.iterator({ destroyOnReturn: false }) as AsyncIterable<m.ImageChunk>) {
      const s = this.session(chunk.migrationId, chunk.epoch, 'final-delta');
      if (s.state !== 'receiving') throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'final-delta', detail: `session is ${s.state}` });
      const invalid = (detail: string): FerryError => new FerryError('IMAGE_INVALID', { side: 'dest', phase: 'final-delta', detail });
      if (!IMAGE_NAME.test(chunk.name) || REBUILT_IMAGE.test(chunk.name)) throw invalid(`image name not allowed: ${JSON.stringify(chunk.name)}`);
      const total = Number(chunk.totalSize);
      const offset = Number(chunk.offset);
      if (!(total >= 0 && total <= MAX_IMAGE_BYTES)) throw invalid(`${chunk.name}: size ${chunk.totalSize} out of bounds`);
      let seen = s.images.get(chunk.name);
      if (!seen) {
        if (offset !== 0) throw invalid(`${chunk.name}: first chunk at offset ${offset}`);
        seen = { written: 0, total };
        s.images.set(chunk.name, seen);
        files++;
      }
      if (offset !== seen.written || total !== seen.total || offset + chunk.data.length > total) {
        throw invalid(`${chunk.name}: chunk at ${offset}+${chunk.data.length} does not continue ${seen.written}/${seen.total}`);
      }
      const fh = await open(join(s.imagesDir, chunk.name), offset === 0 ? 'w' : 'r+');
      try {
        await fh.write(chunk.data, 0, chunk.data.length, offset);
      } finally {
        await fh.close();
      }
      seen.written += chunk.data.length;
      bytes += chunk.data.length;
    }
    return { files, bytes: String(bytes) };
  }

  async restore(req: m.RestoreRequest): Promise<m.RestoreResponse> {
    const s = this.session(req.migrationId, req.epoch, 'restore');
    if (s.state !== 'receiving') throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'restore', detail: `session is ${s.state}` });
    for (const [name, seen] of s.images) {
      if (seen.written !== seen.total) throw new FerryError('IMAGE_INVALID', { side: 'dest', phase: 'restore', detail: `${name}: ${seen.written} of ${seen.total} bytes` });
    }
    if (!s.images.has('inventory.img') || !s.images.has('pstree.img')) {
      throw new FerryError('IMAGE_INVALID', { side: 'dest', phase: 'restore', detail: 'inventory.img or pstree.img missing' });
    }
    s.state = 'restoring';
    try {
      const t0 = process.hrtime.bigint();
      if (faultArmed('dest.corrupt-store')) await corruptOnePage(s);
      for (const manifest of req.pages) {
        if (!IMAGE_NAME.test(manifest.pagemapImage) || !s.images.has(manifest.pagemapImage)) {
          throw new FerryError('IMAGE_INVALID', { side: 'dest', phase: 'restore', detail: `manifest names ${manifest.pagemapImage}, which was not uploaded` });
        }
      }
      const chain = await buildParentChain(s.imagesDir, s.chainDir, req.pages, s.stores, s.pageSize);
      const stores = [...s.stores.values()];
      s.stores.clear(); // their files now belong to the chain
      const t1 = process.hrtime.bigint();
      // Reading the store back runs beside CRIU: the copy stays stopped, and a bad page aborts it below.
      const [restored, verified] = await Promise.allSettled([restoreStopped(s, req.timeoutMs), verifyStores(stores)]);
      if (restored.status === 'fulfilled') {
        s.restoredPid = restored.value;
        await recordRestored(s.dir, restored.value);
      }
      if (verified.status === 'rejected') throw verified.reason; // the catch below removes the restored copy
      if (restored.status === 'rejected') throw restored.reason;
      const pid = restored.value;
      const t2 = process.hrtime.bigint();
      s.state = 'restored';
      s.commitLease = setTimeout(() => {
        s.log.warn('no commit within the lease: removing the restored copy', { leaseMs: req.commitLeaseMs });
        this.abortSession(s, 'commit lease expired').catch((e: unknown) => s.log.error('lease abort failed', { err: e }));
      }, req.commitLeaseMs || 120_000);
      s.commitLease.unref();
      this.opts.metrics.restoreSeconds.observe(Number(t2 - t1) / 1e9);
      s.log.info('restored, stopped', { restoredPid: pid, levels: chain.levels, pages: chain.pages, rebuildMs: Number(t1 - t0) / 1e6, restoreMs: Number(t2 - t1) / 1e6 });
      return {
        restoredPid: pid,
        rebuildUs: String((t1 - t0) / 1000n),
        restoreUs: String((t2 - t1) / 1000n),
        pagesFromStore: String(chain.pages),
        bytesWritten: '0', // the store became the images: nothing was copied
      };
    } catch (e) {
      s.state = 'receiving';
      await this.abortSession(s, 'restore failed');
      throw e;
    }
  }

  async commit(req: m.CommitRequest): Promise<m.CommitResponse> {
    const done = this.committed.get(req.migrationId);
    if (done) return { restoredPid: done.restoredPid, resumedAtUnixUs: done.resumedAtUs.toString() };
    const s = this.session(req.migrationId, req.epoch, 'commit');
    if (s.state !== 'restored' || s.restoredPid === undefined) {
      throw new FerryError('COMMIT_REJECTED', { side: 'dest', phase: 'commit', detail: `session is ${s.state}` });
    }
    clearTimeout(s.commitLease);
    resumeTree(s.restoredPid);
    const resumedAtUs = BigInt(Date.now()) * 1000n;
    s.state = 'committed';
    this.committed.set(s.id, { restoredPid: s.restoredPid, resumedAtUs });
    // Long enough for a source retrying a Commit whose reply was lost; then forgotten.
    setTimeout(() => this.committed.delete(s.id), COMMITTED_MEMORY_MS).unref();
    this.sessions.delete(s.id);
    s.log.info('committed: restored copy resumed', { restoredPid: s.restoredPid });
    this.opts.metrics.migrations.inc({ result: 'committed' });
    await s.removeFiles();
    return { restoredPid: s.restoredPid, resumedAtUnixUs: resumedAtUs.toString() };
  }

  async abort(req: m.AbortRequest): Promise<m.AbortResponse> {
    if (this.committed.has(req.migrationId)) return { existed: true, alreadyCommitted: true, killedRestoredCopy: false };
    const s = this.sessions.get(req.migrationId);
    if (!s) return { existed: false, alreadyCommitted: false, killedRestoredCopy: false };
    if (s.epoch !== BigInt(req.epoch)) {
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'rollback', detail: `epoch ${req.epoch} is not ${s.epoch}` });
    }
    const killed = await this.abortSession(s, req.reason || 'aborted by the source');
    return { existed: true, alreadyCommitted: false, killedRestoredCopy: killed };
  }

  /** Kills an uncommitted restored copy and removes the session's files. Never touches a committed one. */
  private async abortSession(s: DestSession, reason: string): Promise<boolean> {
    if (s.state === 'committed') return false;
    let killed = false;
    if (s.restoredPid !== undefined) {
      killTree(s.restoredPid);
      killed = true;
    }
    s.state = 'aborted';
    this.sessions.delete(s.id);
    await s.removeFiles();
    s.log.info('session aborted', { reason, killedRestoredCopy: killed });
    this.opts.metrics.migrations.inc({ result: 'aborted' });
    return killed;
  }

  /** On shutdown: every uncommitted session is rolled back on this side. */
  async close(): Promise<void> {
    for (const s of [...this.sessions.values()]) await this.abortSession(s, 'dest agent stopping');
  }
}

/** Fault injection: flips one byte of the first stored page, as a failing disk would. */
async function corruptOnePage(s: DestSession): Promise<void> {
  const store = s.stores.values().next().value;
  const level = store?.levels[0];
  if (!level) return;
  const fh = await open(level.path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 100);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, 100);
  } finally {
    await fh.close();
  }
}
