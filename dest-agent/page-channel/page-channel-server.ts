/**
 * The dest's page-channel listener (docs/protocol.md, "Page channels"): the data plane beside the gRPC control
 * plane. Prepare offers a session a fresh 32-byte token and a number of channels; a channel opens with HELLO
 * (migration id, epoch, token, index), which is checked against the session that peer opened over gRPC before
 * anything else is read. Then BATCH frames are stored through the same path as StreamPages, in the stream's
 * seq order across its channels (a page of round r+1 never lands before its round r copy), and acked in
 * batches. A channel that breaks before its CLOSE abandons its session, as a dropped StreamPages does.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { FerryError, asFerryError } from '../../shared/errors/ferry-error.js';
import type { Logger } from '../../shared/logging/logger.js';
import { describeIdentity, identityFromSubjectAltName } from '../../shared/transport/peer-identity.js';
import { FrameReader, type Frame } from '../../shared/transport/page-channel/frame-reader.js';
import {
  decodeBatch,
  decodeHello,
  encodeAck,
  encodeEmpty,
  encodeError,
  FrameType,
  CHANNEL_TOKEN_BYTES,
  MAX_BODY_BYTES,
  MAX_CHANNEL_BATCH_PAGES,
  type BatchFrame,
  type Hello,
} from '../../shared/transport/page-channel/page-channel-frame.js';
import { loadTlsMaterial } from '../../shared/transport/tls-material.js';
import type { TransportSecurity } from '../../shared/transport/transport-security.js';
import type { DestSession } from '../session.js';
import type { PeerKey } from '../peer-key.js';
import { SeqOrder } from './seq-order.js';
import { BodyPool } from '../../shared/transport/page-channel/body-pool.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';

/** A dialer must say HELLO (after its TLS handshake) within this, or it is cut. */
export const HELLO_TIMEOUT_MS = 10_000;
/** Connections at once that have not said HELLO yet (the listener's cap is the channels' plus these). */
export const PRE_HELLO_CONNECTIONS = 16;
/** Channels a session may have; the source asks for fewer. */
export const MAX_PAGE_CHANNELS = 16;
/** Acked at least once per this many batches, and whenever nothing more is waiting to be stored. */
const ACK_EVERY_BATCHES = 4;
/** Received bytes held (frames not yet stored) before the socket is paused: two full batches. */
const MAX_PENDING_BYTES = 9 * 1024 * 1024;
/** What a queued frame costs beyond its body (the Frame object, its empty Buffer). */
const FRAME_OVERHEAD_BYTES = 64;

/** What the listener needs of the dest service (dest-service.ts implements it). */
export interface PageChannelHost {
  /** The live, receiving session this peer opened with this id and epoch (SESSION_NOT_FOUND, SESSION_EPOCH_MISMATCH). */
  session(migrationId: string, epoch: string, peer: PeerKey): DestSession;
  /** A stream slot for the channel (DEST_TOO_MANY_STREAMS past the bounds); the release. */
  acquireStream(peer: PeerKey): () => void;
  /** Verifies and stores one whole batch, as StreamPages does; `scratch` (the channel's) takes its pages' hashes. */
  store(s: DestSession, batch: BatchFrame, scratch: Buffer, signal: AbortSignal): Promise<{ pages: number; bytes: number; storeUs: number }>;
  /** The source dropped a channel mid-stream: its session is aborted. */
  abandon(s: DestSession): Promise<void>;
  readonly streamIdleMs: number;
}

export interface PageChannelOffer {
  port: number;
  token: Buffer;
  channels: number;
}

interface Offered extends PageChannelOffer {
  epoch: bigint;
  order: SeqOrder;
  sockets: Set<net.Socket>;
  /** Which channel indexes said HELLO: each at most once. */
  opened: Set<number>;
}

export class PageChannelServer {
  private readonly server: net.Server;
  private readonly offers = new Map<string, Offered>();
  private host: PageChannelHost | undefined;
  private refresh: NodeJS.Timeout | undefined;
  private port = 0;

  /** Accepted connections that have not been admitted (HELLO checked) yet. */
  private readonly preHello = new Set<net.Socket>();

  constructor(
    private readonly security: TransportSecurity,
    private readonly log: Logger,
    maxConnections: number,
    readonly helloTimeoutMs = HELLO_TIMEOUT_MS,
    private readonly maxPreHello = PRE_HELLO_CONNECTIONS,
  ) {
    if (security.kind === 'tls') {
      const m = security.material;
      // handshakeTimeout: a dialer that never finishes its handshake holds a connection slot this long at most.
      const server = tls.createServer({ key: m.key, cert: m.cert, ca: m.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', handshakeTimeout: helloTimeoutMs });
      // A renewed certificate is served to the next channel, as the gRPC listener does (certificate-rotation.ts).
      this.refresh = setInterval(() => {
        try {
          const fresh = loadTlsMaterial(security.files, security.roles);
          server.setSecureContext({ key: fresh.key, cert: fresh.cert, ca: fresh.ca });
        } catch (e) {
          log.warn('page channel: TLS files on disk not taken', { err: e });
        }
      }, security.refreshIntervalMs);
      this.refresh.unref();
      server.on('secureConnection', (s) => this.accept(s));
      server.on('tlsClientError', (e) => log.debug('page channel TLS handshake failed', { err: e }));
      this.server = server;
    } else {
      this.server = net.createServer((s) => this.accept(s));
    }
    this.server.maxConnections = maxConnections;
  }

  /** Listens on `host`, port `port` (0: any free one); resolves with the port. */
  async listen(host: string, port: number, channelHost: PageChannelHost): Promise<number> {
    this.host = channelHost;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Prepare's offer for a session (the same one again for a repeated Prepare). */
  offer(s: DestSession, wanted: number): PageChannelOffer | undefined {
    if (!this.host || wanted < 1) return undefined;
    const had = this.offers.get(s.id);
    if (had && had.epoch === s.epoch) return { port: had.port, token: had.token, channels: had.channels };
    const o: Offered = { port: this.port, token: randomBytes(CHANNEL_TOKEN_BYTES), channels: Math.min(wanted, MAX_PAGE_CHANNELS), epoch: s.epoch, order: new SeqOrder(), sockets: new Set(), opened: new Set() };
    this.offers.set(s.id, o);
    return { port: o.port, token: o.token, channels: o.channels };
  }

  /** The session no longer receives: its channels are closed and its token is void. */
  closeSession(id: string): void {
    const o = this.offers.get(id);
    if (!o) return;
    this.offers.delete(id);
    o.order.close(new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'precopy', detail: 'the session no longer receives pages' }));
    for (const s of o.sockets) s.destroy();
  }

  get openChannels(): number {
    let n = 0;
    for (const o of this.offers.values()) n += o.sockets.size;
    return n;
  }

  async close(): Promise<void> {
    clearInterval(this.refresh);
    for (const id of [...this.offers.keys()]) this.closeSession(id);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Who the peer is, in the terms of peer-key.ts: its verified identity under TLS, else its address. */
  private peerOf(socket: net.Socket): PeerKey {
    if (socket instanceof tls.TLSSocket) {
      const id = identityFromSubjectAltName(socket.getPeerCertificate().subjectaltname);
      if (!id.ok) throw new FerryError('PEER_IDENTITY_INVALID', { side: 'dest', phase: 'precopy', detail: id.problem });
      if (this.security.kind === 'tls' && !this.security.allowList.allows(id.identity)) {
        throw new FerryError('PEER_NOT_ALLOWED', { side: 'dest', phase: 'precopy', detail: `${describeIdentity(id.identity)} is not on this dest's allow-list` });
      }
      return `tls:${describeIdentity(id.identity)}`;
    }
    return (socket.remoteAddress ?? 'unknown').replace(/^::ffff:(?=\d+\.)/, '');
  }

  private accept(socket: net.Socket): void {
    // Connections that have not said HELLO yet are bounded on their own, so they never take an admitted
    // channel's room; each lasts helloTimeoutMs at most (a deadline, not an idle time: a byte now and then
    // does not extend it).
    if (this.preHello.size >= this.maxPreHello) {
      socket.destroy();
      return;
    }
    this.preHello.add(socket);
    socket.once('close', () => this.preHello.delete(socket));
    socket.setNoDelay(true);
    const channel = new DestChannel(socket, this, this.log);
    channel.run().catch((e: unknown) => this.log.error('page channel failed', { err: e }));
  }

  /** HELLO checked: the session, its token (constant time), the channel index, each once. */
  admit(hello: Hello, socket: net.Socket): { session: DestSession; offer: Offered; release: () => void } {
    const host = this.host!;
    const peer = this.peerOf(socket);
    // Before the token is confirmed every refusal looks the same: a dialer learns nothing of which migrations or
    // epochs exist (the log says which check failed).
    const refuse = (why: unknown): never => {
      this.log.info('page channel HELLO refused', { migrationId: hello.migrationId.slice(0, 64), peer: String(peer).slice(0, 256), why: why instanceof Error ? why.message : String(why) });
      throw new FerryError('PAGE_CHANNEL_TOKEN_INVALID', { side: 'dest', phase: 'precopy' });
    };
    let session: DestSession;
    try {
      session = host.session(hello.migrationId, hello.epoch, peer);
    } catch (e) {
      return refuse(e);
    }
    const o = this.offers.get(session.id);
    if (!o || o.epoch !== session.epoch || !timingSafeEqual(o.token, hello.token)) return refuse('no offer of this session holds that token');
    if (hello.channel >= o.channels || o.opened.has(hello.channel)) {
      throw new FerryError('PAGE_CHANNEL_FRAME_INVALID', { side: 'dest', phase: 'precopy', detail: `channel ${hello.channel} of ${o.channels} (each opens once)` });
    }
    const release = host.acquireStream(peer);
    this.preHello.delete(socket);
    o.opened.add(hello.channel);
    o.sockets.add(socket);
    socket.once('close', () => o.sockets.delete(socket));
    return { session, offer: o, release };
  }

  get channelHost(): PageChannelHost {
    return this.host!;
  }
}

/** One accepted connection: HELLO, then batches until CLOSE. */
class DestChannel {
  /** Room for every body the channel may hold at once: its queue up to the bound, one filling, one being stored. */
  private readonly bodies = new BodyPool(MAX_PENDING_BYTES + 2 * MAX_BODY_BYTES[FrameType.BATCH]);
  private readonly reader = new FrameReader(new Set([FrameType.HELLO]), 'dest', (n) => this.bodies.take(n));
  private readonly frames: Frame[] = [];
  /** The hashes the store computes of a batch, one buffer for the channel's life (batches are stored one at a time). */
  private readonly scratch = Buffer.allocUnsafe(MAX_CHANNEL_BATCH_PAGES * HASH_BYTES);
  private wake: (() => void) | undefined;
  private ended: FerryError | undefined;
  /** The socket closed or broke: there is no one to tell why. */
  private peerGone = false;
  private readonly stop = new AbortController();

  constructor(
    private readonly socket: net.Socket,
    private readonly server: PageChannelServer,
    private readonly log: Logger,
  ) {}

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private end(e: FerryError): void {
    this.ended ??= e;
    this.stop.abort(e);
    this.poke();
  }

  private async nextFrame(): Promise<Frame> {
    for (;;) {
      const f = this.frames.shift();
      if (f) {
        if (this.socket.isPaused() && this.reader.pendingBytes + this.queuedBytes() < MAX_PENDING_BYTES) this.socket.resume();
        return f;
      }
      if (this.ended) throw this.ended;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private queuedBytes(): number {
    let n = 0;
    // A frame costs its body and its bookkeeping: empty frames (CLOSE, a second HELLO) count too.
    for (const f of this.frames) n += f.body.length + FRAME_OVERHEAD_BYTES;
    return n;
  }

  private onData = (chunk: Buffer): void => {
    try {
      this.reader.push(chunk);
      for (let f = this.reader.next(); f; f = this.reader.next()) {
        this.frames.push(f);
        // Nothing more until the HELLO is checked: run() says what comes next once it is.
        if (f.type === FrameType.HELLO) this.reader.expect(new Set());
      }
    } catch (e) {
      this.end(asFerryError(e, 'PAGE_CHANNEL_FRAME_INVALID', { side: 'dest', phase: 'precopy' }));
      return;
    }
    if (this.reader.pendingBytes + this.queuedBytes() >= MAX_PENDING_BYTES) this.socket.pause();
    this.poke();
  };

  async run(): Promise<void> {
    const socket = this.socket;
    socket.setTimeout(this.server.helloTimeoutMs);
    socket.on('timeout', () => this.end(new FerryError('STREAM_IDLE_TIMEOUT', { side: 'dest', phase: 'precopy', detail: 'a page channel stayed silent' })));
    socket.on('data', this.onData);
    socket.on('error', () => {
      this.peerGone = true;
      this.end(new FerryError('PAGE_STREAM_FAILED', { side: 'dest', phase: 'precopy', detail: 'the page channel broke' }));
    });
    socket.on('close', () => {
      this.peerGone = true;
      this.end(new FerryError('PAGE_STREAM_FAILED', { side: 'dest', phase: 'precopy', detail: 'the source closed the page channel before its CLOSE' }));
    });
    let admitted: ReturnType<PageChannelServer['admit']> | undefined;
    let clean = false;
    const helloDeadline = setTimeout(
      () => this.end(new FerryError('STREAM_IDLE_TIMEOUT', { side: 'dest', phase: 'precopy', detail: `no HELLO within ${this.server.helloTimeoutMs} ms` })),
      this.server.helloTimeoutMs,
    );
    try {
      const hello = await this.nextFrame();
      const h = decodeHello(hello.body);
      admitted = this.server.admit(h, socket);
      clearTimeout(helloDeadline);
      admitted.session.log.info('page channel open', { channel: h.channel, of: admitted.offer.channels, tls: socket instanceof tls.TLSSocket });
      socket.setTimeout(this.server.channelHost.streamIdleMs);
      this.reader.expect(new Set([FrameType.BATCH, FrameType.CLOSE]));
      socket.write(encodeEmpty(FrameType.READY));
      clean = await this.receive(admitted.session, admitted.offer.order);
    } catch (e) {
      const fe = asFerryError(e, 'PAGE_STREAM_FAILED', { side: 'dest', phase: 'precopy' });
      if (!socket.destroyed && !this.peerGone) {
        this.log.warn('page channel refused or failed', { err: fe, session: admitted?.session.id });
        socket.end(encodeError(fe));
      } else socket.destroy();
    } finally {
      clearTimeout(helloDeadline);
      // Refused, failed or closed: nothing more is read, whatever the peer keeps sending.
      socket.off('data', this.onData);
      socket.pause();
      // However it ended (a clean CLOSE included), the socket is gone within a second: a peer that never
      // closes its side holds nothing.
      if (!socket.destroyed) setTimeout(() => socket.destroy(), 1_000).unref();
      admitted?.release();
      this.stop.abort();
      if (admitted && !clean) {
        const s = admitted.session;
        admitted.offer.order.close(this.ended ?? new FerryError('PAGE_STREAM_FAILED', { side: 'dest', phase: 'precopy' }));
        await this.server.channelHost.abandon(s);
      }
    }
  }

  /** Batches until CLOSE (true); throws when the channel breaks. */
  private async receive(s: DestSession, order: SeqOrder): Promise<boolean> {
    let lastSeq = 0n;
    let acked = { batches: 0, pages: 0, bytes: 0n, storeUs: 0n };
    const ack = (): void => {
      if (acked.batches === 0) return;
      this.socket.write(encodeAck({ seq: lastSeq, batches: acked.batches, pages: acked.pages, bytes: acked.bytes, storeMicros: acked.storeUs }));
      acked = { batches: 0, pages: 0, bytes: 0n, storeUs: 0n };
    };
    for (;;) {
      const f = await this.nextFrame();
      if (f.type === FrameType.CLOSE) {
        ack();
        this.socket.end(encodeEmpty(FrameType.CLOSE));
        return true;
      }
      const batch = decodeBatch(f.body);
      if (batch.seq <= lastSeq) throw new FerryError('PAGE_SEQ_OUT_OF_ORDER', { side: 'dest', phase: 'precopy', detail: `batch ${batch.seq} after ${lastSeq} on this channel` });
      lastSeq = batch.seq;
      // Whole and in the stream's order: only then is it stored.
      await order.turn(batch.seq, this.stop.signal);
      try {
        const r = await this.server.channelHost.store(s, batch, this.scratch, this.stop.signal);
        acked.batches++;
        acked.pages += r.pages;
        acked.bytes += BigInt(r.bytes);
        acked.storeUs += BigInt(r.storeUs);
      } finally {
        order.done(batch.seq);
        // Stored (or failed): nothing holds the frame's bytes any more.
        this.bodies.give(f.body);
      }
      if (acked.batches >= ACK_EVERY_BATCHES || this.frames.length === 0) ack();
    }
  }
}
