/**
 * The Dest gRPC service: sessions, page stream, image upload, restore, commit, abort. Every field a peer
 * sends is checked against its bound (request-bounds.ts) before it is used, every call against the session's
 * epoch (session-registry.ts), and what a peer may hold open against the agent's limits (dest-limits.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, statfsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../shared/errors/ferry-error.js';
import { toStatus } from '../shared/errors/grpc-status.js';
import type { Logger } from '../shared/logging/logger.js';
import type { Phase } from '../shared/phases.js';
import { chooseProtocolVersion, localPeerInfo, MOUNT_PATHS_FEATURE, protocolVersions, TASK_NETWORK_FEATURE } from '../shared/peer-info.js';
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import { decodePageBatch } from '../shared/transport/page-batch.js';
import { acceptedPageCodecs, BatchPayloadDecoder } from '../shared/pages/batch-codec.js';
import { HASH_BYTES } from '../shared/pages/page-hash-index.js';
import type * as m from '../shared/transport/messages.js';
import { faultArmed, injectFault } from '../shared/fault-injection.js';
import type { DestSession } from './session.js';
import { SessionRegistry } from './session-registry.js';
import { logTransition } from './session-log.js';
import { readStat } from '../shared/kernel/proc-status.js';
import { recoverSessions } from './restart-recovery.js';
import { corruptOnePage } from './corrupt-store.js';
import { ImageChainPageSource } from './image-chain.js';
import { prepareLazyImages } from './lazy/lazy-images.js';
import { LAZY_RESTORE_FEATURE, probeLazyRestore, type LazyRestoreSupport } from './lazy/lazy-restore-support.js';
import { PagerLink, pagerPaths, type FillOutcome } from './lazy/pager-link.js';
import { fillDone, checkFillRequest, type FillBounds } from './lazy/fill-messages.js';
import { decodePlan, REMOTE_PAGE } from './lazy/pager-plan.js';
import { checkRemotePages, hasRemote } from './lazy/remote-pages.js';
import type { RestorePageSourceFactory } from './restore-page-source.js';
import { restoreFeatures, restoreStopped, resumeTree, killTree } from './restore.js';
import { checkExternalMounts, missingMounts, restoreMountNamespace } from './restore-mount-namespace.js';
import { restoreTaskNetwork } from './restore-task-network.js';
import { checkCopyHeld, finishCopyThrough, letCopyThrough, removeOuterLink, type CopyThrough } from './task-network-copy.js';
import type { DestMetrics } from './dest-metrics.js';
import { compileDestLimits, sessionQuotaBytes, type DestLimits } from './dest-limits.js';
import { LevelFilePool } from './level-file-pool.js';
import { peerKey, type PeerKey } from './peer-key.js';
import { PeerSlots } from './peer-slots.js';
import { checkAbortReason, checkBatchSize, checkManifests, checkListLength, checkMigrationId, checkPeerInfo, checkPrepareRequest, checkText, durationMs, checkTaskNetwork } from './request-bounds.js';
import { answerTaskNetwork } from './task-network-answer.js';
import { SessionBudget } from './session-budget.js';
import { StreamIdle } from './stream-idle.js';
import { openWorkDir } from './work-dir.js';
import type { PageChannelHost, PageChannelServer } from './page-channel/page-channel-server.js';
import { PAGE_CHANNELS_FEATURE } from '../shared/peer-info.js';
import type { PageBatch } from '../shared/transport/page-batch.js';

/** How long a Fill opened beside the Restore waits for the restore to start its pager. */
const PAGER_WAIT_MS = 150_000;

/** The session's pager, once its restore started it; undefined if it never will (eager, ended, the call gone). */
async function pagerOf(s: DestSession, call: grpc.ServerDuplexStream<m.FillRequest, m.FillEvent>): Promise<PagerLink | undefined> {
  for (let waited = 0; waited < PAGER_WAIT_MS; waited += 20) {
    if (s.pager) return s.pager;
    if ((s.state !== 'receiving' && s.state !== 'restoring') || call.cancelled) return undefined;
    await sleep(20);
  }
  return undefined;
}

/** What the Fill checks a request against: the manifests' page counts and remote bits. */
function fillBounds(s: DestSession): FillBounds {
  return { pages: s.fillPages ?? new Map(), remote: s.fillRemote ?? new Map() };
}

/** A plan's remote pages as the manifest's bitmap (a restarted agent has only its plan). */
function remoteBitmap(pages: readonly { file: unknown }[]): Buffer {
  const bits = Buffer.alloc(Math.ceil(pages.length / 8));
  for (const [k, p] of pages.entries()) if (p.file === REMOTE_PAGE) bits[k >>> 3]! |= 1 << (k & 7);
  return bits;
}

/** When the source leaves a duration unset (0). */
const DEFAULT_RESTORE_TIMEOUT_MS = 120_000;
const DEFAULT_COMMIT_LEASE_MS = 120_000;
/**
 * Negotiate answers from one probe for this long: probing runs `criu check` and the tracker probes, and any
 * peer may call Negotiate, so a flood of them must not become a flood of processes.
 */
const PEER_INFO_TTL_MS = 5_000;

export interface DestOptions {
  workDir: string;
  log: Logger;
  metrics: DestMetrics;
  /** What criu restore reads the pages from; the store-backed parent-image chain unless told. */
  pageSource?: RestorePageSourceFactory;
  /** The trackers this host could run as a source, for Negotiate (`ferry check` shows them); none unless told. */
  trackers?: () => Promise<readonly string[]>;
  /** The agent's bounds; DEFAULT_DEST_LIMITS for whatever is not given. */
  limits?: Partial<DestLimits>;
  /** Whether lazy restores are possible here; probed (lazy/lazy-restore-support.ts) unless told. */
  lazyRestore?: () => Promise<LazyRestoreSupport>;
  /** The page-channel listener (page-channel/page-channel-server.ts); without it pages come over StreamPages only. */
  pageChannels?: PageChannelServer;
  /** The bridge a task with its own network joins here (`dest-agent --bridge`); undefined: the source's bridge's name. */
  bridge?: string | undefined;
}

/** One batch as both transports hand it over: which round and task, and the page fields. */
interface IncomingBatch extends PageBatch {
  round: number;
  task: number;
}

/** Which migration a stream call was about, once its first message said so: for the log of its failure. */
interface CallSession {
  id?: string;
}

export class DestService {
  private readonly limits: DestLimits;
  private readonly sessions: SessionRegistry;
  private readonly streams: PeerSlots;
  private readonly files: LevelFilePool;
  /** Page payloads (--compress) decoded before the hash check, for StreamPages and the page channels alike. */
  private readonly payloads = new BatchPayloadDecoder();
  private readonly pageSource: RestorePageSourceFactory;
  private workDirReady: Promise<void> | undefined;
  private peerInfo: { at: number; info: Promise<m.PeerInfo> } | undefined;
  private lazy: Promise<LazyRestoreSupport> | undefined;
  /** What runs on after a copy resumed (its addresses announced, its hold deleted): close() waits for it. */
  private readonly afterResume = new Set<Promise<void>>();

  constructor(private readonly opts: DestOptions) {
    this.limits = compileDestLimits(opts.limits);
    this.sessions = new SessionRegistry(this.limits);
    this.streams = new PeerSlots('streams', this.limits.maxStreams, this.limits.maxStreamsPerPeer, 'DEST_TOO_MANY_STREAMS');
    this.files = new LevelFilePool(this.limits.maxOpenLevelFiles);
    this.pageSource = opts.pageSource ?? ((s) => new ImageChainPageSource(s));
    this.sessions.subscribe(logTransition);
    this.sessions.subscribe(opts.metrics.onTransition);
    this.sessions.subscribe(({ to }) => {
      if (to === 'committed' || to === 'aborted') opts.metrics.migrations.inc({ result: to });
    });
    // A session that no longer receives has no use for its channels: they close, its token is void.
    this.sessions.subscribe(({ session, from, to }) => {
      if (from === 'receiving' && to !== 'receiving') opts.pageChannels?.closeSession(session.id);
    });
  }

  /** The grpc-js handler table. Every handler maps its error to a status with the Ferry code in a trailer. */
  handlers(): grpc.UntypedServiceImplementation {
    const unary =
      <Req, Res>(fn: (req: Req, peer: PeerKey, signal: AbortSignal) => Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
        // The caller went away (cancelled, deadline, connection lost): it will never read the answer.
        const gone = new AbortController();
        call.once('cancelled', () => gone.abort(new FerryError('CANCELLED', { side: 'dest', detail: 'the source cancelled the call or its connection was lost' })));
        fn(call.request, peerKey(call), gone.signal).then(
          (res) => cb(null, res),
          (e: unknown) => {
            this.callLog((call.request as { migrationId?: unknown } | null)?.migrationId).warn('call failed', { err: e });
            cb(toStatus(e));
          },
        );
      };
    return {
      Negotiate: unary((r: m.NegotiateRequest) => this.negotiate(r)),
      Prepare: unary((r: m.PrepareRequest, peer) => this.prepare(r, peer)),
      Restore: unary((r: m.RestoreRequest, peer, signal) => this.restore(r, peer, signal)),
      Commit: unary((r: m.CommitRequest, peer) => this.commit(r, peer)),
      Abort: unary((r: m.AbortRequest, peer) => this.abort(r, peer)),
      Fill: (call: grpc.ServerDuplexStream<m.FillRequest, m.FillEvent>) => {
        const seen: CallSession = {};
        this.fill(call, peerKey(call), seen).catch((e: unknown) => {
          this.callLog(seen.id).warn('fill stream failed', { err: e });
          call.emit('error', toStatus(e));
        });
      },
      StreamPages: (call: grpc.ServerDuplexStream<m.PageBatchMessage, m.PageAck>) => {
        const seen: CallSession = {};
        this.streamPages(call, peerKey(call), seen).catch((e: unknown) => {
          this.callLog(seen.id).warn('page stream failed', { err: e });
          call.emit('error', toStatus(e));
        });
      },
      UploadImages: (call: grpc.ServerReadableStream<m.ImageChunk, m.UploadImagesResponse>, cb: grpc.sendUnaryData<m.UploadImagesResponse>) => {
        const seen: CallSession = {};
        this.uploadImages(call, peerKey(call), seen).then(
          (res) => cb(null, res),
          (e: unknown) => {
            this.callLog(seen.id).warn('image upload failed', { err: e });
            cb(toStatus(e));
          },
        );
      },
    };
  }

  /**
   * The log of a call about migration `id`: its live session's (with the phase and round there), or one that
   * names the id (bounded, as every logged string is). The agent's own for a call that named none.
   */
  private callLog(id: unknown): Logger {
    if (typeof id !== 'string' || id === '') return this.opts.log;
    return this.sessions.all().find((s) => s.id === id)?.log ?? this.opts.log.child({ side: 'dest', migrationId: id });
  }

  /** Whether this host can restore lazily (the pager is built, CRIU and the kernel have uffd-noncoop), asked once. */
  private lazyProbe(): Promise<LazyRestoreSupport> {
    this.lazy ??= this.opts.lazyRestore ? this.opts.lazyRestore() : probeLazyRestore();
    return this.lazy;
  }

  async negotiate(req: m.NegotiateRequest): Promise<m.NegotiateResponse> {
    checkPeerInfo(req.source);
    const mounts = req.externalMounts ?? [];
    checkExternalMounts('external_mounts', mounts, 'negotiate');
    const offered = req.pageCodecs ?? [];
    checkListLength('page_codecs', offered.length, 8, 'negotiate');
    for (const c of offered) checkText('page_codecs entry', c, 16, 'negotiate');
    const net = req.taskNetwork ?? undefined;
    if (net) checkTaskNetwork('task_network', net, 'negotiate');
    const now = Date.now();
    if (!this.peerInfo || now - this.peerInfo.at > PEER_INFO_TTL_MS) {
      const trackers = this.opts.trackers ? this.opts.trackers() : Promise.resolve([]);
      this.peerInfo = {
        at: now,
        info: Promise.all([trackers, this.lazyProbe()]).then(async ([t, lazy]) => ({
          ...(await localPeerInfo(t, [MOUNT_PATHS_FEATURE, TASK_NETWORK_FEATURE, ...(lazy.ok ? [LAZY_RESTORE_FEATURE] : []), ...(this.opts.pageChannels ? [PAGE_CHANNELS_FEATURE] : [])])),
          lazyRestoreProblem: lazy.ok ? '' : lazy.reason,
        })),
      };
    }
    const dest = await this.peerInfo.info;
    // Which paths exist here is the answer: the source's preflight refuses a task that needs one that does not.
    return {
      dest,
      protocolVersion: chooseProtocolVersion(protocolVersions(), req.source?.protocolVersions ?? []),
      missingMounts: missingMounts(mounts),
      pageCodecs: acceptedPageCodecs(offered),
      // Whether the bridge is here and the addresses are free on it: the source's preflight decides.
      taskNetwork: net ? await answerTaskNetwork(net, this.opts.bridge) : null,
    };
  }

  async prepare(req: m.PrepareRequest, peer: PeerKey = 'local'): Promise<m.PrepareResponse> {
    injectFault('dest.prepare');
    const epoch = checkPrepareRequest(req);
    if (!protocolVersions().includes(req.protocolVersion)) {
      throw new FerryError('PROTOCOL_MISMATCH', { side: 'dest', phase: 'prepare', detail: `version ${req.protocolVersion} is not spoken here` });
    }
    const existing = this.sessions.get(req.migrationId, peer);
    if (existing) {
      if (existing.epoch === epoch && existing.state === 'receiving') {
        existing.touch();
        return { workDir: existing.dir, freeBytes: '0', ...this.channelOffer(existing, req) };
      }
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare' });
    }
    if (this.sessions.holds(req.migrationId)) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare' });
    if (this.sessions.hasEnded(req.migrationId)) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare', detail: 'a migration of this id already ended here' });
    // Which pids are taken stays in this log: an answer naming them would let any peer probe this host's pids.
    const taken = req.requiredPids.filter((pid) => existsSync(`/proc/${pid}`));
    if (taken.length > 0) {
      this.opts.log.warn('prepare refused: required pids in use here', { migrationId: req.migrationId, pids: taken });
      throw new FerryError('TASK_PIDS_TAKEN_ON_DEST', { side: 'dest', phase: 'prepare', detail: 'some of the required pids are in use on the dest (its log names them)' });
    }
    this.workDirReady ??= openWorkDir(this.opts.workDir).catch((e: unknown) => {
      this.workDirReady = undefined;
      throw e;
    });
    await this.workDirReady;
    const fs = statfsSync(this.opts.workDir);
    const free = BigInt(fs.bavail) * BigInt(fs.bsize);
    // Each session may still fill what its own budget allows: a new one fits beside all of them, or not at all.
    const reserved = this.sessions.all().reduce((n, s) => n + BigInt(s.budget.remainingBytes), 0n);
    const quota = sessionQuotaBytes(this.limits, BigInt(req.expectedBytes));
    if (free < quota + reserved) {
      throw new FerryError('DEST_PREPARE_FAILED', {
        side: 'dest',
        phase: 'prepare',
        detail: `${this.opts.workDir} has ${free} bytes free, ${reserved} of them held for open sessions; the migration may need ${quota}`,
      });
    }
    const session = await this.sessions.open({
      workDir: this.opts.workDir,
      id: req.migrationId,
      epoch,
      pageSize: PAGE_SIZE,
      log: this.opts.log.child({ side: 'dest', migrationId: req.migrationId }),
      fields: { task: req.taskName, expectedBytes: req.expectedBytes, peer },
      peer,
      budget: new SessionBudget(Number(quota), PAGE_SIZE),
      files: this.files,
      maxStoreLevels: this.limits.maxStoreLevels,
    });
    // An Abort of this id that ran while the session was being made (its source gave up on this Prepare).
    if (this.sessions.wasAbortedUnprepared(req.migrationId)) {
      await this.abortSession(session, 'aborted while it was being prepared');
      throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'prepare', detail: 'the source aborted this migration while it was prepared' });
    }
    session.expireWhenIdle(this.limits.sessionIdleMs, () => {
      session.log.warn('session idle: aborting it', { idleMs: this.limits.sessionIdleMs });
      this.abortSession(session, 'idle').catch((e: unknown) => session.log.error('idle abort failed', { err: e }));
    });
    return { workDir: session.dir, freeBytes: free.toString(), ...this.channelOffer(session, req) };
  }

  /** Prepare's answer about page channels: the port, the session's token and how many, when asked and served. */
  private channelOffer(s: DestSession, req: m.PrepareRequest): Pick<m.PrepareResponse, 'pageChannelPort' | 'pageChannelToken' | 'pageChannels'> {
    const offer = this.opts.pageChannels?.offer(s, Math.min(req.pageChannels ?? 0, 0xffff));
    return offer ? { pageChannelPort: offer.port, pageChannelToken: offer.token, pageChannels: offer.channels } : {};
  }

  /** What the page-channel listener asks of this service: the same session checks, slots and store as StreamPages. */
  channelHost(): PageChannelHost {
    return {
      session: (id, epoch, peer) => {
        const s = this.session(id, epoch, 'precopy', peer);
        s.expect('receiving', 'precopy');
        return s;
      },
      acquireStream: (peer) => this.streams.acquire(peer, 'precopy'),
      store: async (s, b, scratch, signal) => {
        s.touch();
        const data = this.payloads.decode({ codec: b.codec, payload: b.payload, rawBytes: b.rawBytes }, b.kinds, b.pages, s.pageSize);
        return this.storeBatch(s, { round: b.round, task: b.task, pageNumbers: b.pageNumbers, hashes: b.hashes, kinds: b.kinds, data }, scratch, signal);
      },
      abandon: async (s) => {
        if (s.state === 'receiving') await this.abortSession(s, 'a page channel was dropped').catch((e: unknown) => s.log.error('abort failed', { err: e }));
      },
      streamIdleMs: this.limits.streamIdleMs,
    };
  }

  /** One batch checked (layout, then every page's hash) and stored; what it cost, for the ack. */
  private async storeBatch(s: DestSession, b: IncomingBatch, scratch: Buffer, signal: AbortSignal): Promise<{ pages: number; bytes: number; storeUs: number }> {
    const t0 = process.hrtime.bigint();
    const batch = decodePageBatch(b, s.pageSize);
    // One line per round, not per batch: where the migration is, on this host's log too.
    if (s.receivedRound(b.round)) s.log.info('receiving a round', { round: b.round });
    const store = s.store(b.task);
    await store.put(batch, batch.count * HASH_BYTES > scratch.length ? Buffer.allocUnsafe(batch.count * HASH_BYTES) : scratch, signal);
    injectFault('dest.stream-pages'); // a batch is stored (acts at the first)
    this.opts.metrics.pagesReceived.inc(batch.count);
    this.opts.metrics.bytesReceived.inc(batch.data.length);
    return { pages: batch.count, bytes: batch.data.length, storeUs: Number((process.hrtime.bigint() - t0) / 1000n) };
  }

  /** A live session for a call: its id well-formed, its epoch the session's, opened by this peer. */
  private session(migrationId: string, epoch: string, phase: Phase, peer: PeerKey): DestSession {
    checkMigrationId(migrationId, phase);
    const s = this.sessions.lookup(migrationId, epoch, phase, peer);
    // Being removed (its abort is writing the journal, its files going): for a caller it is gone already.
    if (s.state === 'aborted') throw new FerryError('SESSION_NOT_FOUND', { side: 'dest', phase, detail: `migration ${migrationId} was aborted` });
    return s;
  }

  async streamPages(call: grpc.ServerDuplexStream<m.PageBatchMessage, m.PageAck>, peer: PeerKey = 'local', seen: CallSession = {}): Promise<void> {
    const release = this.streams.acquire(peer, 'precopy');
    // The slot is the call's: a peer that walks away frees it at once; its batches still queued are dropped.
    // A source only ever drops its page stream when its migration failed (or it died): the session it fed is
    // aborted rather than held until it idles out, once the batch being stored is done (its files in place).
    const ended = new AbortController();
    let fed: DestSession | undefined;
    let answered = false; // a cancel after our own end or error is the client closing up, not walking away
    let loopDone = false;
    let peerLeft = false;
    const abandon = async (): Promise<void> => {
      const s = fed;
      if (s?.state === 'receiving') await this.abortSession(s, 'the page stream was dropped').catch((e: unknown) => s.log.error('abort failed', { err: e }));
    };
    call.once('cancelled', () => {
      ended.abort();
      release();
      if (answered) return;
      peerLeft = true;
      if (loopDone) void abandon();
    });
    try {
      const idle = new StreamIdle(this.limits.streamIdleMs, 'precopy', call);
      const scratch = Buffer.allocUnsafe(1024 * HASH_BYTES);
      let lastSeq = -1n;
      // destroyOnReturn false: a plain for-await destroys the call at the end, and the status would never be sent.
      for await (const raw of idle.messages(call.iterator({ destroyOnReturn: false }) as AsyncIterable<m.PageBatchMessage>)) {
        seen.id = raw.migrationId;
        const s = this.session(raw.migrationId, raw.epoch, 'precopy', peer);
        s.expect('receiving', 'precopy');
        fed = s;
        const seq = BigInt(raw.seq);
        if (seq <= lastSeq) throw new FerryError('PAGE_SEQ_OUT_OF_ORDER', { side: 'dest', phase: 'precopy', detail: `batch ${seq} after ${lastSeq}` });
        lastSeq = seq;
        checkBatchSize(raw);
        const data = this.payloads.decode({ codec: raw.codec ?? 0, payload: raw.data, rawBytes: raw.rawBytes ?? 0 }, raw.kinds, raw.pageNumbers.length / 8, s.pageSize);
        const r = await this.storeBatch(s, { ...raw, data }, scratch, ended.signal);
        const ack: m.PageAck = { seq: raw.seq, pages: r.pages, bytes: String(raw.data.length), storeUs: String(r.storeUs), rawBytes: String(r.bytes) };
        if (!call.write(ack)) await idle.drained(call);
      }
      answered = true;
      call.end();
    } catch (e) {
      answered = true;
      throw e;
    } finally {
      loopDone = true;
      release();
      if (peerLeft) await abandon();
    }
  }

  async uploadImages(call: grpc.ServerReadableStream<m.ImageChunk, m.UploadImagesResponse>, peer: PeerKey = 'local', seen: CallSession = {}): Promise<m.UploadImagesResponse> {
    const release = this.streams.acquire(peer, 'final-delta');
    call.once('cancelled', release); // as for the page stream
    try {
      const idle = new StreamIdle(this.limits.streamIdleMs, 'final-delta', call);
      let files = 0;
      let bytes = 0;
      for await (const chunk of idle.messages(call.iterator({ destroyOnReturn: false }) as AsyncIterable<m.ImageChunk>)) {
        seen.id = chunk.migrationId;
        const s = this.session(chunk.migrationId, chunk.epoch, 'final-delta', peer);
        s.expect('receiving', 'final-delta');
        if (files === 0 && bytes === 0) s.imagesBegan();
        if (await s.images.write(chunk)) files++;
        if (files === 1) injectFault('dest.upload-images');
        bytes += chunk.data.length;
      }
      return { files, bytes: String(bytes) };
    } finally {
      release();
    }
  }

  async restore(req: m.RestoreRequest, peer: PeerKey = 'local', callGone?: AbortSignal): Promise<m.RestoreResponse> {
    const s = this.session(req.migrationId, req.epoch, 'restore', peer);
    checkManifests(req.pages);
    const timeoutMs = durationMs('timeout_ms', req.timeoutMs, DEFAULT_RESTORE_TIMEOUT_MS, 'restore');
    const commitLeaseMs = durationMs('commit_lease_ms', req.commitLeaseMs, DEFAULT_COMMIT_LEASE_MS, 'restore');
    s.expect('receiving', 'restore');
    s.images.checkComplete();
    // Post-copy's remote pages: refused here, with the session as it was, if the manifests misname any.
    for (const man of req.pages) if (hasRemote(man)) s.images.checkUploaded(man.pagemapImage);
    await checkRemotePages(s.imagesDir, req.pages, req.mode);
    const features = await restoreFeatures(req.criuFeatures);
    const mountNs = restoreMountNamespace(req.mountNs);
    const taskNetwork = restoreTaskNetwork(req.taskNetwork, s.id, this.opts.bridge);
    // On disk before criu starts: a restarted agent looks for criu and its pid file (and the outer veth) from here.
    await s.transition('restoring', { manifests: req.pages.length }, taskNetwork ? { taskNetwork } : {});
    s.taskNetwork = taskNetwork;
    try {
      const t0 = process.hrtime.bigint();
      if (faultArmed('dest.corrupt-store')) await corruptOnePage(s.stores.values());
      for (const manifest of req.pages) s.images.checkUploaded(manifest.pagemapImage);
      const lazy = req.mode === 'RESTORE_MODE_LAZY';
      if (lazy) {
        const support = await this.lazyProbe();
        if (!support.ok) throw new FerryError('RESTORE_MODE_UNSUPPORTED', { side: 'dest', phase: 'restore', detail: support.reason });
      }
      let pages: { levels: number; pages: number; lazyPages: number };
      let restored: PromiseSettledResult<number>;
      let verified: PromiseSettledResult<unknown>;
      let t1: bigint;
      if (lazy) {
        const paths = pagerPaths(s.dir, s.imagesDir);
        const images = await prepareLazyImages(s, req.pages, paths.plan);
        s.lazyStores = images.stores;
        s.fillPages = new Map(req.pages.map((m) => [m.task, m.hashes.length / HASH_BYTES]));
        s.fillRemote = new Map(req.pages.map((m) => [m.task, m.remote ?? Buffer.alloc(0)]));
        pages = { levels: 1, pages: images.pages, lazyPages: images.lazyPages };
        s.log.debug('lazy images made', { ...images.steps });
        injectFault('dest.rebuild');
        t1 = process.hrtime.bigint();
        // The pager listens before criu starts, and checks every page's bytes before the copy gets them.
        s.pager = await PagerLink.start(paths, s.log, fillBounds(s));
        this.watchUncommittedPager(s, s.pager);
        injectFault('dest.pager-started');
        [restored] = await Promise.allSettled([restoreStopped(s, timeoutMs, callGone, true, features, mountNs, taskNetwork)]);
        verified = { status: 'fulfilled', value: 0 };
      } else {
        const source = this.pageSource(s);
        pages = { ...(await source.prepare(req.pages)), lazyPages: 0 };
        injectFault('dest.rebuild');
        t1 = process.hrtime.bigint();
        // The source checks the bytes beside CRIU: the copy stays stopped, and a bad page aborts it below.
        // A source that went away will never commit: criu (and what it made) is killed at once.
        [restored, verified] = await Promise.allSettled([restoreStopped(s, timeoutMs, callGone, false, features, mountNs, taskNetwork), source.verify()]);
      }
      if (restored.status === 'fulfilled') {
        s.restoredPid = restored.value;
        if (s.pager) s.pager.copy = { pid: restored.value, startTime: readStat(restored.value)?.startTime ?? 0 };
      }
      if (verified.status === 'rejected') throw verified.reason; // the catch below removes the restored copy
      if (restored.status === 'rejected') throw restored.reason;
      callGone?.throwIfAborted();
      const pid = restored.value;
      // Held, or it could answer before the Commit (the catch below kills it).
      if (taskNetwork) checkCopyHeld(pid, taskNetwork);
      const t2 = process.hrtime.bigint();
      const leaseUntil = Date.now() + commitLeaseMs;
      await s.transition(
        'restored',
        { restoredPid: pid, levels: pages.levels, pages: pages.pages, lazyPages: pages.lazyPages, rebuildMs: Number(t1 - t0) / 1e6, restoreMs: Number(t2 - t1) / 1e6 },
        { restoredPid: pid, startTime: readStat(pid)?.startTime ?? 0, leaseUntil, ...(s.pager ? { pagerPid: s.pager.pager.pid, pagerStartTime: s.pager.pager.startTime } : {}) },
      );
      injectFault('dest.restored');
      this.holdUntilCommit(s, commitLeaseMs);
      this.opts.metrics.restoreSeconds.observe(Number(t2 - t1) / 1e9);
      return {
        restoredPid: pid,
        rebuildUs: String((t1 - t0) / 1000n),
        restoreUs: String((t2 - t1) / 1000n),
        pagesFromStore: String(pages.pages),
        bytesWritten: '0', // the store became the images: nothing was copied
        pagesLazy: String(pages.lazyPages),
      };
    } catch (e) {
      await this.abortSession(s, 'restore failed');
      throw e;
    }
  }

  /**
   * The restored copy waits for Commit until its lease ends; then it is removed, and a Commit after that is
   * refused (the source, learning so, resumes its original).
   */
  private holdUntilCommit(s: DestSession, leaseMs: number): void {
    clearTimeout(s.commitLease);
    s.commitLease = setTimeout(() => {
      s.log.warn('no commit within the lease: removing the restored copy', { leaseMs });
      this.abortSession(s, 'commit lease expired').catch((e: unknown) => s.log.error('lease abort failed', { err: e }));
    }, leaseMs);
    s.commitLease.unref();
  }

  async commit(req: m.CommitRequest, peer: PeerKey = 'local'): Promise<m.CommitResponse> {
    checkMigrationId(req.migrationId, 'commit');
    const ended = this.sessions.endedSession(req.migrationId, req.epoch, 'commit', peer);
    if (ended?.outcome === 'committed') return { restoredPid: ended.restoredPid, resumedAtUnixUs: ended.resumedAtUs.toString() };
    if (ended?.outcome === 'aborted') throw new FerryError('COMMIT_REJECTED', { side: 'dest', phase: 'commit', detail: `the session was aborted: ${ended.reason}` });
    const s = this.sessions.lookup(req.migrationId, req.epoch, 'commit', peer);
    // A repeated Commit of a lazy copy that runs while its pages arrive: the first answer again.
    if (s.state === 'filling' && s.restoredPid !== undefined && s.resumedAtUs !== undefined) return { restoredPid: s.restoredPid, resumedAtUnixUs: s.resumedAtUs.toString() };
    s.expect('restored', 'commit', 'COMMIT_REJECTED');
    const restoredPid = s.restoredPid;
    if (restoredPid === undefined) throw new FerryError('INTERNAL', { side: 'dest', phase: 'commit', detail: 'a restored session without a restored pid' });
    clearTimeout(s.commitLease);
    // The copy came back held (the source's hold travelled in its ruleset): let through while it is still stopped
    // and nothing is decided, so that a hold that cannot be let go refuses the Commit (the source thaws its
    // original) instead of a committed copy nobody can reach.
    let through: CopyThrough | undefined;
    try {
      through = s.taskNetwork ? letCopyThrough(restoredPid, s.taskNetwork) : undefined;
    } catch (e) {
      throw await this.refuseUnreachable(s, e);
    }
    const resumedAtUs = BigInt(Date.now()) * 1000n;
    s.resumedAtUs = resumedAtUs;
    // On disk before the copy runs: a restart after this line resumes it, never kills it.
    const lazy = s.pager !== undefined;
    await s.transition(lazy ? 'filling' : 'committed', { restoredPid }, { restoredPid, resumedAtUs: resumedAtUs.toString() });
    injectFault('dest.commit-recorded');
    resumeTree(restoredPid);
    // Announced and the hold deleted after the resume: both wait for an RCU grace period (nft-hold.ts).
    if (through) this.trackAfterResume(finishCopyThrough(through, s.log));
    injectFault('dest.commit-resumed');
    // From the resume on, the fill's end decides the session (it may have ended already: the pager may have had
    // every page before the Commit came).
    if (s.pager) this.watchFill(s, s.pager);
    if (!lazy) {
      this.sessions.rememberEnded(s.id, { outcome: 'committed', epoch: s.epoch, peer: s.peer, restoredPid, resumedAtUs }, s);
      // After the answer: removing a large store takes time the frozen source would otherwise wait for.
      s.removeFiles().catch((e: unknown) => s.log.warn('session files not removed', { err: e }));
    }
    return { restoredPid, resumedAtUnixUs: resumedAtUs.toString() };
  }

  /** A Commit whose copy's hold cannot be let go: the copy (still stopped and held) is removed; the refusal to throw. */
  private async refuseUnreachable(s: DestSession, e: unknown): Promise<FerryError> {
    const detail = `the copy's network hold cannot be let go: ${e instanceof Error ? e.message : String(e)}`;
    s.log.error('commit refused: the restored copy would run unreachable', { err: e });
    await this.abortSession(s, detail);
    return new FerryError('COMMIT_REJECTED', { side: 'dest', phase: 'commit', detail, cause: e });
  }

  /** Before the resume a failed pager is a failed restore: the copy is removed, a Commit refused. */
  private watchUncommittedPager(s: DestSession, pager: PagerLink): void {
    pager.outcome
      .then(async (o) => {
        if (o.kind === 'failed' && (s.state === 'restoring' || s.state === 'restored')) await this.abortSession(s, `the pager failed: ${o.reason}`);
      })
      .catch((e: unknown) => s.log.error('pager outcome not handled', { err: e }));
  }

  private watchFill(s: DestSession, pager: PagerLink): void {
    pager.outcome.then((o) => this.fillEnded(s, o)).catch((e: unknown) => s.log.error('fill outcome not handled', { err: e }));
  }

  /**
   * How a lazy restore's fill ended (pager-link.ts). Before the resume a failed pager is a failed restore
   * (the copy is removed, a Commit refused); after it, the copy was killed, so the session ends aborted and
   * the source resumes its original. A filled copy runs on its own: the session is committed.
   */
  private async fillEnded(s: DestSession, o: FillOutcome): Promise<void> {
    if (o.kind === 'detached') return;
    if (s.state === 'filling') {
      if (o.kind === 'filled') {
        const fill = { ...o.stats };
        await s.transition('committed', { ...fill }, { fill });
        this.sessions.rememberEnded(s.id, { outcome: 'committed', epoch: s.epoch, peer: s.peer, restoredPid: s.restoredPid ?? 0, resumedAtUs: s.resumedAtUs ?? 0n, fill }, s);
        this.opts.metrics.migrations.inc({ result: 'filled' });
      } else {
        const reason = `the pager failed during the fill: ${o.reason}`;
        await s.transition('aborted', { reason, killedRestoredCopy: true }, { reason, restoredPid: s.restoredPid });
        this.sessions.rememberEnded(s.id, { outcome: 'aborted', epoch: s.epoch, peer: s.peer, reason }, s);
      }
      await s.removeFiles();
    }
  }

  /**
   * The fill of a lazy restore, after Commit: the source's confirmations and pages go to the pager, its wants
   * and progress come back, and the stream ends with FillDone once every page is in (FILL_FAILED if the copy
   * had to be killed). A session that already ended answers at once.
   */
  async fill(call: grpc.ServerDuplexStream<m.FillRequest, m.FillEvent>, peer: PeerKey = 'local', seen: CallSession = {}): Promise<void> {
    const release = this.streams.acquire(peer, 'commit');
    call.once('cancelled', release);
    let detach: (() => void) | undefined;
    let answered = false; // the fill's end went out: what the source's half does after that no longer matters
    let ackedBytes = 0;
    try {
      let s: DestSession | undefined;
      let ended: Promise<void> | undefined;
      for await (const req of call.iterator({ destroyOnReturn: false }) as AsyncIterable<m.FillRequest>) {
        if (!s) {
          seen.id = req.migrationId;
          checkMigrationId(req.migrationId, 'commit');
          const over = this.sessions.endedSession(req.migrationId, req.epoch, 'commit', peer);
          if (over?.outcome === 'committed') {
            call.write({ done: fillDone(over.fill ?? {}) });
            call.end();
            return;
          }
          if (over?.outcome === 'aborted') throw new FerryError('FILL_FAILED', { side: 'dest', phase: 'commit', detail: over.reason });
          s = this.sessions.lookup(req.migrationId, req.epoch, 'commit', peer);
          // Opened beside the Restore: the pager starts during it (its restorer may already fault on a page).
          const pager = await pagerOf(s, call);
          if (!pager) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'commit', detail: `the session is ${s.state} without a pager: there is nothing to fill` });
          // What this agent already gave the pager (an earlier call broke): the source's sweep skips it. Then every
          // want not answered yet (attach), before any new one: wants a broken call took with it must not wait.
          for (const ready of pager.forwarded.ready()) call.write({ ready });
          detach = pager.attach({
            want: (w) => call.write({ wanted: { task: w.task, firstIndex: String(w.index), count: w.count, bytes: w.bytes } }),
            progress: (st) => call.write({ progress: { filledPages: String(st.filledPages ?? 0), totalPages: String(st.totalPages ?? 0), faults: String(st.faults ?? 0) } }),
          });
          ended = pager.outcome.then((o) => {
            answered = true;
            if (o.kind === 'filled') {
              call.write({ done: fillDone(o.stats) });
              call.end();
            } else if (o.kind === 'failed') {
              call.emit('error', toStatus(new FerryError('FILL_FAILED', { side: 'dest', phase: 'commit', detail: o.reason })));
            } else {
              // The agent stops, its pager fills on: never FILL_FAILED (the source would thaw its original beside
              // a running copy). The source opens the Fill again, to this agent's successor.
              call.emit('error', toStatus(new FerryError('CANCELLED', { side: 'dest', phase: 'commit', detail: 'the dest agent is stopping; its pager fills on' })));
            }
          });
        }
        const pager = s.pager!;
        // None for the opening message, which only names the session.
        for (const step of checkFillRequest(req, fillBounds(s), s.pageSize)) {
          if (step.kind === 'confirm') await pager.confirm(req.task, step.first, step.count);
          else this.opts.metrics.remotePages.inc(await pager.replace(req.task, step.first, step.data));
        }
        // The source's window: these bytes are off the link now.
        if (req.data.length > 0) call.write({ ack: { dataBytes: String((ackedBytes += req.data.length)) } });
      }
      await ended; // the source closed its side: the fill's end still reaches it
    } catch (e) {
      if (!answered) throw e;
    } finally {
      detach?.();
      release();
    }
  }

  async abort(req: m.AbortRequest, peer: PeerKey = 'local'): Promise<m.AbortResponse> {
    checkMigrationId(req.migrationId, 'rollback');
    checkAbortReason(req.reason);
    const ended = this.sessions.endedSession(req.migrationId, req.epoch, 'rollback', peer);
    if (ended) return { existed: true, alreadyCommitted: ended.outcome === 'committed', killedRestoredCopy: false };
    if (!this.sessions.get(req.migrationId, peer)) {
      if (!this.sessions.holds(req.migrationId)) this.sessions.rememberAbortedUnprepared(req.migrationId);
      return { existed: false, alreadyCommitted: false, killedRestoredCopy: false };
    }
    const s = this.sessions.lookup(req.migrationId, req.epoch, 'rollback', peer);
    const killed = await this.abortSession(s, req.reason || 'aborted by the source');
    return { existed: true, alreadyCommitted: false, killedRestoredCopy: killed };
  }

  /**
   * Kills an uncommitted restored copy and removes the session's files. Never touches a committed one. A
   * session an Abort ended while its restore ran comes here again from the restore: its copy is killed then.
   */
  private async abortSession(s: DestSession, reason: string): Promise<boolean> {
    // A copy that was resumed is never killed from here: only its pager's failure ends it (fillEnded).
    if (s.state === 'committed' || s.state === 'filling') return false;
    const copy = s.restoredPid;
    // The decision first (no Commit is taken from here on), then the kill.
    if (s.state !== 'aborted') await s.transition('aborted', { reason, killedRestoredCopy: copy !== undefined }, { reason, restoredPid: copy });
    if (copy !== undefined) killTree(copy);
    // Only a veth of this session's copy: without one, a link of that name is someone else's (criu removes what
    // it made when it fails).
    if (s.taskNetwork && copy !== undefined) removeOuterLink(copy, s.taskNetwork, s.log);
    await s.pager?.abort();
    this.sessions.rememberEnded(s.id, { outcome: 'aborted', epoch: s.epoch, peer: s.peer, reason }, s);
    await s.removeFiles();
    return copy !== undefined;
  }

  /** At start: the sessions a previous agent left, resolved from their journals (restart-recovery.ts). */
  /** Resolves once the journals are read and the revived sessions are live; an orphan restore is cleaned up after. */
  async recover(): Promise<void> {
    const found = await recoverSessions(this.opts.workDir, this.opts.log, (init) =>
      this.sessions.revive({ ...init, workDir: this.opts.workDir, pageSize: PAGE_SIZE, files: this.files, maxStoreLevels: this.limits.maxStoreLevels }),
    );
    for (const e of found.ended) this.sessions.rememberEnded(e.id, e.outcome);
    for (const r of found.revived) {
      const s = r.session;
      if (r.pager) {
        const paths = pagerPaths(s.dir, s.imagesDir);
        const tasks = await readFile(paths.plan)
          .then((b) => decodePlan(b).tasks)
          .catch(() => []);
        s.fillPages = new Map(tasks.map((t) => [t.nsPid, t.pages.length]));
        s.fillRemote = new Map(tasks.map((t) => [t.nsPid, remoteBitmap(t.pages)]));
        s.pager = await PagerLink.adopt(paths, r.pager.pager, r.pager.copy, s.log, fillBounds(s));
        if (s.state === 'filling') this.watchFill(s, s.pager);
        else this.watchUncommittedPager(s, s.pager);
      }
      if (s.state === 'restored') this.holdUntilCommit(s, r.leaseMs);
    }
    // In the background: an orphan criu may run for a while, and the agent serves meanwhile.
    found.cleanup.catch((e: unknown) => this.opts.log.error('cleaning up after the previous agent failed', { err: e }));
  }

  /** `p` never rejects (resumeOnTheWire logs its failures). */
  private trackAfterResume(p: Promise<void>): void {
    this.afterResume.add(p);
    void p.finally(() => this.afterResume.delete(p));
  }

  /** On shutdown: every uncommitted session is rolled back on this side. */
  async close(): Promise<void> {
    for (const s of this.sessions.all()) {
      // A resumed copy's pager fills on without this agent; the next one adopts it.
      if (s.state === 'filling') s.pager?.detach();
      else await this.abortSession(s, 'dest agent stopping');
    }
    await Promise.all(this.afterResume);
  }
}
