/**
 * The migration's page stream (PageStream in migration/ports.ts) over the dest's page channels: N sockets
 * (mutual TLS as the gRPC channel, or plaintext under --insecure) beside the control plane, each opened with
 * the HELLO Prepare's token allows. Batches are numbered across the channels (the dest stores them in that
 * order) and spread over them, least loaded first, while at most `windowBytes` are unacknowledged in all;
 * flush() is the round barrier: every channel has acked everything. A channel that breaks fails the stream.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { tlsClientOptions } from '../../shared/transport/credentials.js';
import type { HostPort } from '../../shared/transport/address.js';
import { batchPageCount, type PageBatch } from '../../shared/transport/page-batch.js';
import { FrameReader } from '../../shared/transport/page-channel/frame-reader.js';
import { decodeAck, decodeError, encodeBatch, encodeEmpty, encodeHello, FrameType } from '../../shared/transport/page-channel/page-channel-frame.js';
import { PAGE_CODEC } from '../../shared/pages/batch-codec.js';
import type { TransportSecurity } from '../../shared/transport/transport-security.js';
import type { PageStreamOptions } from '../page-stream-options.js';
import { batchPayload, StreamWaits } from '../stream-waits.js';

/** Connect, handshake and READY of one channel. */
export const CHANNEL_OPEN_TIMEOUT_MS = 10_000;
/**
 * Unacknowledged batches and no byte either way for this long: the channel is given up (a dest host gone
 * silent; gRPC's keepalive found it in ~15 s). A link that comes back sooner carries on where it was.
 */
export const CHANNEL_ACK_TIMEOUT_MS = 30_000;
/** Bytes of frames a channel may hold unwritten before send() waits for them to go out: ~4 batches. */
const CHANNEL_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
/** After CLOSE, how long the dest's CLOSE (everything stored) is waited for. */
const CHANNEL_CLOSE_TIMEOUT_MS = 10_000;

export interface PageChannelTarget {
  /** The dest as dialed for gRPC; the channels go to its host at `port`. */
  dest: HostPort;
  port: number;
  token: Buffer;
  channels: number;
  security: TransportSecurity;
}

interface Inflight {
  seq: bigint;
  cost: number;
}

/** One socket: its window share and what it has not had acked yet, in send order. */
class SourceChannel {
  readonly reader = new FrameReader(new Set([FrameType.READY, FrameType.ERROR]), 'source');
  readonly inflight: Inflight[] = [];
  inflightBytes = 0;
  /**
   * Frames not handed to the socket yet, and their bytes. The socket gets one frame at a time, the next once it
   * called the last one back: it joins writes that wait behind one into a single writev, and a TLS socket copies
   * a writev's buffers into one before it encrypts them (a second pass over every byte).
   */
  readonly unsent: { parts: Buffer[]; bytes: number; written: () => void }[] = [];
  unsentBytes = 0;
  /** A frame is in the socket, not called back yet. */
  writing = false;
  draining: Promise<void> | undefined;
  /** Resolves `draining`: a frame went out, or the socket closed. */
  drained: (() => void) | undefined;
  closed = false;
  constructor(
    readonly index: number,
    readonly socket: net.Socket,
  ) {}
}

export class PageChannelStream {
  private readonly channels: SourceChannel[] = [];
  private seq = 0n;
  private inflightBytes = 0;
  private readonly waits = new StreamWaits(() => {
    for (const c of this.channels) c.socket.destroy();
  });
  private finished = false;
  bytesSent = 0;
  pagesSent = 0;
  storedBytes = 0;
  storeMicros = 0;

  private constructor(
    private readonly target: PageChannelTarget,
    private readonly opts: PageStreamOptions,
  ) {}

  /** Opens every channel (HELLO answered READY); the first refusal or failure, with every socket closed. */
  static async open(target: PageChannelTarget, opts: PageStreamOptions): Promise<PageChannelStream> {
    const stream = new PageChannelStream(target, opts);
    opts.signal.addEventListener('abort', stream.onAbort, { once: true });
    try {
      await Promise.all(Array.from({ length: target.channels }, (_, i) => stream.openChannel(i)));
    } catch (e) {
      stream.cancel();
      throw stream.waits.failure ?? e;
    }
    return stream;
  }

  private readonly onAbort = (): void => {
    this.waits.fail(new FerryError('CANCELLED', { phase: this.opts.phase(), side: 'source' }));
  };

  private broken(detail: string): FerryError {
    return new FerryError('PAGE_STREAM_FAILED', { phase: this.opts.phase(), side: 'source', detail });
  }

  private openChannel(index: number): Promise<void> {
    const { dest, port, security } = this.target;
    const socket =
      security.kind === 'tls' ? tls.connect({ host: dest.host, port, ...tlsClientOptions(security, dest) }) : net.connect({ host: dest.host, port });
    const c = new SourceChannel(index, socket);
    this.channels.push(c);
    socket.setNoDelay(true);
    const where = `page channel ${index} to ${dest.host}:${port}`;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => reject(this.broken(`${where}: not open within ${CHANNEL_OPEN_TIMEOUT_MS} ms`)), CHANNEL_OPEN_TIMEOUT_MS);
      const settle = (e?: FerryError): void => {
        clearTimeout(timer);
        if (e) reject(e);
        else resolve();
      };
      socket.once(security.kind === 'tls' ? 'secureConnect' : 'connect', () => {
        socket.write(encodeHello({ migrationId: this.opts.migrationId, epoch: this.opts.epoch, token: this.target.token, channel: index }));
      });
      socket.on('data', (chunk: Buffer) => {
        try {
          c.reader.push(chunk);
          for (let f = c.reader.next(); f; f = c.reader.next()) {
            if (f.type === FrameType.ERROR) {
              const e = decodeError(f.body);
              e.phase ??= this.opts.phase();
              this.waits.fail(e);
              settle(e);
              return;
            }
            if (f.type === FrameType.READY) {
              ready = true;
              c.reader.expect(new Set([FrameType.ACK, FrameType.ERROR, FrameType.CLOSE]));
              socket.setTimeout(CHANNEL_ACK_TIMEOUT_MS);
              settle();
            } else if (f.type === FrameType.ACK) this.acked(c, decodeAck(f.body));
            else {
              // CLOSE: the dest stored everything of this channel. Only an answer to ours, with nothing in flight:
              // a dest that closes first would leave flush() waiting for acks that never come.
              if (!this.finished || c.inflight.length > 0) throw this.broken(`${where}: the dest closed it first (${c.inflight.length} batches unacknowledged)`);
              c.closed = true;
            }
          }
        } catch (e) {
          const fe = e instanceof FerryError ? e : this.broken(`${where}: ${String(e)}`);
          this.waits.fail(fe);
          settle(fe);
        }
      });
      socket.on('timeout', () => {
        if (c.inflight.length > 0) this.waits.fail(this.broken(`${where}: no acknowledgement for ${CHANNEL_ACK_TIMEOUT_MS} ms`));
      });
      socket.on('error', (err: Error) => {
        const e = this.waits.failure ?? this.broken(`${where}: ${err.message}`);
        this.waits.fail(e);
        settle(e);
      });
      socket.on('close', () => {
        if (!c.closed) this.waits.fail(this.waits.failure ?? this.broken(`${where} closed${ready ? ' mid-stream' : ' before it was ready'}`));
        settle(this.waits.failure);
        this.waits.poke();
      });
    });
  }

  private acked(c: SourceChannel, ack: { seq: bigint; bytes: bigint; storeMicros: bigint }): void {
    let batches = 0;
    while (c.inflight.length > 0 && c.inflight[0]!.seq <= ack.seq) {
      const b = c.inflight.shift()!;
      c.inflightBytes -= b.cost;
      this.inflightBytes -= b.cost;
      this.opts.compression?.acked(b.cost);
      batches++;
    }
    if (batches === 0) throw new FerryError('PAGE_CHANNEL_FRAME_INVALID', { side: 'source', phase: this.opts.phase(), detail: `an ack of ${ack.seq} acknowledges nothing on channel ${c.index}` });
    this.storedBytes += Number(ack.bytes);
    this.storeMicros += Number(ack.storeMicros);
    this.waits.poke();
  }

  async send(task: number, round: number, batch: PageBatch): Promise<void> {
    const pages = batchPageCount(batch);
    if (pages === 0) return;
    this.waits.throwIfFailed();
    const { codec, payload } = batchPayload(round, batch, this.opts.compression);
    // Compressed, the raw bytes are done with (the payload is a copy): the encoder may fill them again.
    if (codec !== 'none') batch.release?.();
    const cost = await this.waits.admit(pages, payload.length, this.opts, () => this.inflightBytes);
    // The least loaded channel: a slow one (its socket full) is left to drain.
    let c = this.channels[0]!;
    for (const other of this.channels) if (other.inflightBytes < c.inflightBytes) c = other;
    if (c.draining) await c.draining;
    this.waits.throwIfFailed(); // the channel may have broken while it drained
    const seq = ++this.seq;
    c.inflight.push({ seq, cost });
    c.inflightBytes += cost;
    this.inflightBytes += cost;
    this.bytesSent += batch.data.length;
    this.pagesSent += pages;
    // Raw, the header goes into the batch's headroom and the frame is one buffer; compressed, header and payload
    // are two (small) ones in one corked write.
    const frame = { seq, round, task, pages, codec: PAGE_CODEC[codec], payloadBytes: payload.length, rawBytes: batch.data.length, pageNumbers: batch.pageNumbers, hashes: batch.hashes, kinds: batch.kinds, payload };
    const parts = encodeBatch(frame, codec === 'none' ? (batch.headroom ?? 0) : 0);
    // Once the frame is written out (encrypted, or in the kernel), its buffers may hold the next batch.
    c.unsent.push({ parts, bytes: payload.length, written: () => codec === 'none' && batch.release?.() });
    c.unsentBytes += payload.length;
    this.pump(c);
    this.opts.compression?.sent();
    // Back-pressure of our own bound, not the socket's 16 KiB: waiting for 'drain' after every 1 MiB batch
    // left both sides idle half the time (the next batch was read only once this one was in the kernel).
    if (c.unsentBytes > CHANNEL_WRITE_BUFFER_BYTES) {
      c.draining = new Promise<void>((resolve) => {
        const done = (): void => {
          if (c.unsentBytes > CHANNEL_WRITE_BUFFER_BYTES && !c.socket.destroyed) return;
          c.socket.off('close', done);
          c.drained = undefined;
          c.draining = undefined;
          resolve();
        };
        c.drained = done;
        c.socket.on('close', done);
      });
    }
  }

  /** Hands the channel's next frame to its socket, unless one is still being written. */
  private pump(c: SourceChannel): void {
    if (c.writing || c.socket.destroyed) return;
    const next = c.unsent.shift();
    if (!next) return;
    c.writing = true;
    const written = (): void => {
      c.writing = false;
      c.unsentBytes -= next.bytes;
      next.written();
      this.pump(c);
      c.drained?.();
    };
    if (next.parts.length > 1) c.socket.cork();
    for (const [k, p] of next.parts.entries()) c.socket.write(p, k === next.parts.length - 1 ? written : undefined);
    if (next.parts.length > 1) c.socket.uncork();
  }

  /** Waits until the dest has acknowledged everything sent so far, on every channel. */
  async flush(): Promise<void> {
    await this.waits.until(() => this.inflightBytes === 0);
  }

  /** Every batch acknowledged, then CLOSE on each channel and the dest's CLOSE back (bounded). */
  async finish(): Promise<void> {
    await this.flush();
    if (!this.finished) {
      this.finished = true;
      for (const c of this.channels) c.socket.end(encodeEmpty(FrameType.CLOSE));
      const timer = setTimeout(() => this.waits.fail(this.broken(`the dest did not close its page channels within ${CHANNEL_CLOSE_TIMEOUT_MS} ms`)), CHANNEL_CLOSE_TIMEOUT_MS);
      try {
        await this.waits.until(() => this.channels.every((c) => c.closed && c.socket.destroyed));
      } finally {
        clearTimeout(timer);
      }
    }
    this.opts.signal.removeEventListener('abort', this.onAbort);
    this.waits.throwIfFailed();
  }

  /** Drops the stream (rollback): every socket closed at once, pending waits fail. */
  cancel(): void {
    this.opts.signal.removeEventListener('abort', this.onAbort);
    this.waits.fail(new FerryError('CANCELLED', { phase: this.opts.phase(), side: 'source' }));
    for (const c of this.channels) c.socket.destroy();
  }

  /** Sockets not yet closed (tests: none is left after finish or cancel). */
  get openSockets(): number {
    return this.channels.filter((c) => !c.socket.destroyed).length;
  }
}
