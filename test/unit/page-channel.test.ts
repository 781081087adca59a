/**
 * The page channels (issue 15) against a real Dest service and its page-channel listener on 127.0.0.1:0, in
 * plaintext (TLS: test/integration/mutual-tls.test.ts): pages spread over several channels are stored in the
 * stream's order; a bad hash, a HELLO without the session's token, with another session's token or epoch,
 * a frame over the bound, a silent dialer and a channel cut mid-stream are each refused or fail with their
 * code, nothing half-received is stored, and no socket is left on either side.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import type * as m from '../../shared/transport/messages.js';
import { FrameReader, type Frame } from '../../shared/transport/page-channel/frame-reader.js';
import { decodeError, encodeBatch, encodeHello, FRAME_HEADER_BYTES, FrameType } from '../../shared/transport/page-channel/page-channel-frame.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { PageChannelStream } from '../../source-agent/page-channel/page-channel-stream.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import { PageBatchEncoder } from '../../shared/transport/page-batch.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { content, EPOCH, handBatch, prepareRequest, startDest, type DestUnderTest } from '../support/dest-grpc.js';

const TASK = 1;
const opened: DestUnderTest[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  for (const d of opened.splice(0)) {
    // The dest's end of a closed channel goes a moment after the source's.
    for (let i = 0; i < 100 && d.channels!.openChannels > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(d.channels!.openChannels).toBe(0);
    await d.close();
  }
});

async function dest(helloTimeoutMs?: number): Promise<DestUnderTest> {
  const d = await startDest({ channels: helloTimeoutMs ? { helloTimeoutMs } : true });
  opened.push(d);
  return d;
}

interface Prepared {
  id: string;
  dir: string;
  answer: m.PrepareResponse;
}

async function prepared(d: DestUnderTest, channels = 2, over: Partial<m.PrepareRequest> = {}): Promise<Prepared> {
  const req = prepareRequest({ expectedBytes: String(64 << 20), pageChannels: channels, ...over });
  const answer = await d.client.prepare(req);
  return { id: req.migrationId, dir: answer.workDir, answer };
}

function open(p: Prepared, over: { port?: number; token?: Buffer; epoch?: string; id?: string; channels?: number } = {}, signal = new AbortController().signal): Promise<PageChannelStream> {
  return PageChannelStream.open(
    { dest: { host: '127.0.0.1', port: 0 }, port: over.port ?? p.answer.pageChannelPort!, token: over.token ?? p.answer.pageChannelToken!, channels: over.channels ?? p.answer.pageChannels!, security: INSECURE_LOOPBACK },
    { migrationId: over.id ?? p.id, epoch: over.epoch ?? EPOCH, windowBytes: 4 << 20, signal, phase: () => 'precopy' },
  );
}

const ascending = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

/** A raw dialer: writes `bytes`, collects the frames the dest answers until it closes. */
function rawChannel(port: number, bytes: Buffer[]): Promise<{ frames: Frame[]; closedMs: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const r = new FrameReader(new Set([FrameType.READY, FrameType.ERROR, FrameType.ACK, FrameType.CLOSE]), 'source');
    const frames: Frame[] = [];
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      for (const b of bytes) s.write(b);
    });
    s.on('data', (c: Buffer) => {
      r.push(c);
      for (let f = r.next(); f; f = r.next()) frames.push(f);
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve({ frames, closedMs: Date.now() - t0 }));
  });
}

const hello = (p: Prepared, over: { token?: Buffer; channel?: number } = {}): Buffer =>
  encodeHello({ migrationId: p.id, epoch: EPOCH, token: over.token ?? p.answer.pageChannelToken!, channel: over.channel ?? 0 });

const level0 = (dir: string): string => join(dir, 'pages', `task-${TASK}.L0.pages`);

describe('page channels', () => {
  it('Prepare offers a port, a 32-byte token and the channels asked for (none when asked for none); a repeated Prepare the same', async () => {
    const d = await dest();
    const p = await prepared(d, 3);
    expect(p.answer.pageChannelPort).toBe(d.channels!.channelHost && p.answer.pageChannelPort);
    expect(p.answer.pageChannelToken).toHaveLength(32);
    expect(p.answer.pageChannels).toBe(3);
    const again = await d.client.prepare({ ...prepareRequest({ migrationId: p.id, pageChannels: 3 }) });
    expect(again.pageChannelToken!.equals(p.answer.pageChannelToken!)).toBe(true);
    const none = await prepared(d, 0);
    expect(none.answer.pageChannels ?? 0).toBe(0);
    expect(none.answer.pageChannelToken?.length ?? 0).toBe(0);
  });

  it('stores pages sent over 3 channels in the stream order (one level, every byte in place), acks them, and closes every socket on finish', async () => {
    const d = await dest();
    const p = await prepared(d, 3);
    const s = await open(p);
    // 64 batches of 16 ascending pages: spread over the channels, they must still land in address order.
    for (let b = 0; b < 64; b++) await s.send(TASK, 0, handBatch(ascending(100 + b * 16, 16)));
    await s.flush();
    expect(s.storedBytes).toBe(64 * 16 * PAGE_SIZE);
    expect(s.pagesSent).toBe(1024);
    // Round 1 rewrites a few pages: the slot is overwritten, never a page of round 0 after it.
    await s.send(TASK, 1, handBatch([100, 101]));
    await s.finish();
    expect(s.openSockets).toBe(0);
    const file = readFileSync(level0(p.dir));
    expect(file.length).toBe(1024 * PAGE_SIZE);
    for (const page of [100, 101, 555, 1123]) expect(file.subarray((page - 100) * PAGE_SIZE, (page - 99) * PAGE_SIZE).equals(content(page))).toBe(true);
    expect(existsSync(join(p.dir, 'pages', `task-${TASK}.L1.pages`))).toBe(false);
  });

  it('sends the encoder\'s batches as one buffer each, through its own queue past the socket\'s bound, and gives every batch back', async () => {
    const d = await dest();
    const p = await prepared(d, 1);
    // A window past the channel's 4 MiB queue: send() must wait on the queue, not only on acks.
    const s = await PageChannelStream.open(
      { dest: { host: '127.0.0.1', port: 0 }, port: p.answer.pageChannelPort!, token: p.answer.pageChannelToken!, channels: 1, security: INSECURE_LOOPBACK },
      { migrationId: p.id, epoch: EPOCH, windowBytes: 48 << 20, signal: new AbortController().signal, phase: () => 'precopy' },
    );
    let released = 0;
    let emitted = 0;
    const enc = new PageBatchEncoder(PAGE_SIZE, (b) => {
      emitted++;
      const release = b.release!;
      return s.send(TASK, 0, { ...b, release: () => (released++, release()) });
    });
    const PAGES = 24 * 256;
    const chunk = Buffer.concat(ascending(0, 256).map(() => Buffer.alloc(PAGE_SIZE)));
    const hashes = Buffer.alloc(256 * HASH_BYTES);
    for (let c = 0; c < PAGES / 256; c++) {
      for (let k = 0; k < 256; k++) content(5000 + c * 256 + k).copy(chunk, k * PAGE_SIZE);
      hashPages(chunk, 256, PAGE_SIZE, hashes);
      for (let k = 0; k < 256; k++) {
        const full = enc.add(5000 + c * 256 + k, hashes, k * HASH_BYTES, chunk, k * PAGE_SIZE, false);
        if (full) await full;
      }
    }
    await enc.flush();
    await s.finish();
    expect([emitted, released, s.storedBytes]).toEqual([24, 24, PAGES * PAGE_SIZE]);
    const file = readFileSync(level0(p.dir));
    for (const page of [5000, 5255, 5256, 5000 + PAGES - 1]) expect(file.subarray((page - 5000) * PAGE_SIZE, (page - 4999) * PAGE_SIZE).equals(content(page))).toBe(true);
  });

  it('refuses a batch with a bad hash on a data channel (PAGE_INTEGRITY): the stream fails, the session is aborted', async () => {
    const d = await dest();
    const p = await prepared(d, 2);
    const s = await open(p);
    await s.send(TASK, 0, handBatch(ascending(1, 8)));
    await s.send(TASK, 0, handBatch(ascending(9, 8), { breakHashOf: 12 }));
    await expectFerryRejection(s.flush(), 'PAGE_INTEGRITY');
    s.cancel();
    expect(s.openSockets).toBe(0);
    // Nothing of that session is trusted any more: it is gone (refused as any unknown HELLO is).
    await expectFerryRejection(open(p), 'PAGE_CHANNEL_TOKEN_INVALID');
  });

  it('refuses a channel without the session token, with another session token, of another epoch, or an index past the offer', async () => {
    const d = await dest();
    const p = await prepared(d, 2);
    const other = await prepared(d, 2);
    await expectFerryRejection(open(p, { token: Buffer.alloc(32) }), 'PAGE_CHANNEL_TOKEN_INVALID');
    await expectFerryRejection(open(p, { token: other.answer.pageChannelToken! }), 'PAGE_CHANNEL_TOKEN_INVALID');
    // Another epoch, or no such migration: the same refusal, so a dialer without the token learns nothing of
    // which migrations and epochs exist.
    await expectFerryRejection(open(p, { epoch: '2' }), 'PAGE_CHANNEL_TOKEN_INVALID');
    await expectFerryRejection(open(p, { id: randomUUID() }), 'PAGE_CHANNEL_TOKEN_INVALID');
    // A refused dialer does not end the session: its source opens its channels and sends.
    const s = await open(p);
    await s.send(TASK, 0, handBatch(ascending(1, 4)));
    await s.flush();
    expect(readFileSync(level0(p.dir)).length).toBe(4 * PAGE_SIZE);
    // Each index opens once, and none past the offer.
    await expectFerryRejection(open(p, { channels: 1 }), 'PAGE_CHANNEL_FRAME_INVALID');
    await s.finish();
    const third = await prepared(d, 2);
    await expectFerryRejection(open(third, { channels: 3 }), 'PAGE_CHANNEL_FRAME_INVALID');
  });

  it('refuses frames before HELLO and a frame over the bound (PAGE_CHANNEL_FRAME_INVALID), and cuts a silent dialer at the HELLO bound', async () => {
    const d = await dest(300);
    const p = await prepared(d, 1);
    const port = p.answer.pageChannelPort!;
    const b = handBatch([1]);
    const batch = Buffer.concat(encodeBatch({ seq: 1n, round: 0, task: TASK, pages: 1, codec: 0, payloadBytes: b.data.length, rawBytes: b.data.length, ...b, payload: b.data }));
    const before = await rawChannel(port, [batch]);
    expect(before.frames.map((f) => f.type)).toEqual([FrameType.ERROR]);
    expect(decodeError(before.frames[0]!.body).key).toBe('PAGE_CHANNEL_FRAME_INVALID');
    const huge = Buffer.alloc(FRAME_HEADER_BYTES);
    huge.writeUInt32LE(64 << 20, 0);
    huge[4] = FrameType.BATCH;
    const over = await rawChannel(port, [hello(p), huge]);
    expect(over.frames.map((f) => f.type)).toEqual([FrameType.READY, FrameType.ERROR]);
    expect(decodeError(over.frames[1]!.body).key).toBe('PAGE_CHANNEL_FRAME_INVALID');
    const silent = await rawChannel(port, []);
    expect(decodeError(silent.frames[0]!.body).key).toBe('STREAM_IDLE_TIMEOUT');
    expect(silent.closedMs).toBeLessThan(3_000);
  });

  it('bounds what a dialer without the token can hold: a HELLO dribbled a byte at a time is cut at its deadline, connections before HELLO past their cap are dropped, and a refused one that keeps sending is closed', async () => {
    const d = await dest(300);
    const p = await prepared(d, 1);
    const port = p.answer.pageChannelPort!;
    // One byte every 50 ms never leaves the socket idle for 300 ms: only a deadline ends it.
    const dribbled = hello(p);
    const t0 = Date.now();
    const closedMs = await new Promise<number>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let i = 0;
      const timer = setInterval(() => {
        if (!s.destroyed && i < dribbled.length) s.write(dribbled.subarray(i, ++i));
      }, 50);
      s.on('error', () => undefined);
      s.on('close', () => {
        clearInterval(timer);
        resolve(Date.now() - t0);
      });
    });
    expect(closedMs).toBeLessThan(2_000);
    // PRE_HELLO_CONNECTIONS (16) held open without a word: the 17th is dropped at once, unread.
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => undefined);
        held.push(s);
        await new Promise<void>((r) => s.once('connect', () => r()));
      }
      await new Promise((r) => setTimeout(r, 50));
      const extra = await rawChannel(port, []);
      expect(extra.frames).toEqual([]);
      expect(extra.closedMs).toBeLessThan(250);
    } finally {
      for (const s of held) s.destroy();
    }
    // A refused HELLO followed by a flood: the dest stops reading and closes within a second or so.
    await new Promise((r) => setTimeout(r, 50));
    const flood = await new Promise<{ closedMs: number; refused: boolean }>((resolve) => {
      const r = new FrameReader(new Set([FrameType.ERROR]), 'source');
      let refused = false;
      const start = Date.now();
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.write(hello(p, { token: Buffer.alloc(32) }));
        const junk = Buffer.alloc(1 << 20);
        const pump = (): void => {
          while (!s.destroyed && s.write(junk));
          if (!s.destroyed) s.once('drain', pump);
        };
        pump();
      });
      s.on('data', (c: Buffer) => {
        r.push(c);
        for (let f = r.next(); f; f = r.next()) refused ||= decodeError(f.body).key === 'PAGE_CHANNEL_TOKEN_INVALID';
      });
      s.on('error', () => undefined);
      s.on('close', () => resolve({ closedMs: Date.now() - start, refused }));
    });
    expect(flood.refused).toBe(true);
    expect(flood.closedMs).toBeLessThan(3_000);
  });

  it('a channel cut mid-stream fails the source stream (PAGE_STREAM_FAILED) and aborts the session; the half-sent batch is never stored', async () => {
    const d = await dest();
    const p = await prepared(d, 2);
    // A proxy between the two ends, cut once a few batches went through.
    const links = new Set<net.Socket>();
    let forwarded = 0;
    /** Once set, the proxy forwards up to this many bytes in all, then cuts every link: never a whole batch more. */
    let cutAt = Infinity;
    let cut: () => void = () => undefined;
    const isCut = new Promise<void>((r) => (cut = r));
    const proxy = net.createServer((c) => {
      const up = net.connect({ host: '127.0.0.1', port: p.answer.pageChannelPort! });
      links.add(c).add(up);
      c.on('data', (x: Buffer) => {
        if (forwarded >= cutAt) return;
        const part = x.subarray(0, Math.min(x.length, cutAt - forwarded));
        forwarded += part.length;
        up.write(part);
        if (forwarded >= cutAt) {
          for (const l of links) l.destroy();
          cut();
        }
      });
      up.pipe(c);
      c.on('error', () => undefined);
      up.on('error', () => undefined);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    cleanups.push(() => proxy.close());
    const s = await open(p, { port: (proxy.address() as net.AddressInfo).port });
    for (let b = 0; b < 4; b++) await s.send(TASK, 0, handBatch(ascending(1 + b * 64, 64)));
    await s.flush();
    const storedBefore = s.storedBytes;
    // A quarter of a batch reaches the dest, then the link is cut.
    cutAt = forwarded + 256 * 1024;
    const send = s.send(TASK, 0, handBatch(ascending(1000, 256)));
    await isCut;
    await send.catch(() => undefined);
    await expectFerryRejection(s.flush(), 'PAGE_STREAM_FAILED');
    expect(s.openSockets).toBe(0);
    expect(storedBefore).toBe(4 * 64 * PAGE_SIZE);
    // The dest aborted the session: its files are gone and its channels refused.
    for (let i = 0; i < 100 && existsSync(p.dir); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(p.dir)).toBe(false);
    await expectFerryRejection(open(p), 'PAGE_CHANNEL_TOKEN_INVALID');
  });

  it('a cancelled stream (rollback) leaves no socket, and its session is aborted', async () => {
    const d = await dest();
    const p = await prepared(d, 4);
    const ac = new AbortController();
    const s = await open(p, {}, ac.signal);
    await s.send(TASK, 0, handBatch(ascending(1, 4)));
    ac.abort();
    await expectFerryRejection(s.flush(), 'CANCELLED');
    expect(s.openSockets).toBe(0);
    for (let i = 0; i < 100 && existsSync(p.dir); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(p.dir)).toBe(false);
  });
});
