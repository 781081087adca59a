/**
 * A bounded mutation loop against a running Dest service (issue 9): valid calls of every kind, each mutated
 * (truncated or bit-flipped bytes, oversized strings, extreme numbers, wrong epochs and ids, reordered seqs
 * and chunk offsets) or replaced by undecodable bytes. Every call must end within its deadline, every
 * refusal must carry a Ferry code (never INTERNAL, never a bare transport failure), nothing may appear outside
 * the work dir, the log stays bounded and the agent still answers at the end.
 * FERRY_FUZZ_CALLS (default 10,000) and FERRY_FUZZ_SEED change the run.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { MIGRATION_ID } from '../../dest-agent/request-bounds.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { createLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import { chunk, EPOCH, handBatch, prepareRequest, sourcePeer, startDest, upload, type DestUnderTest } from '../support/dest-grpc.js';

const CALLS = Number(process.env.FERRY_FUZZ_CALLS ?? 10_000);
const SEED = Number(process.env.FERRY_FUZZ_SEED ?? 9);
const CALL_DEADLINE_MS = 10_000;
/** What a client makes of a failure without a Ferry trailer: the dest failed to code it. */
const UNCODED = new Set(['INTERNAL', 'DEST_UNREACHABLE', 'PAGE_STREAM_FAILED', 'IMAGE_UPLOAD_FAILED']);

/** mulberry32: small, seeded, good enough to pick mutations. */
function prng(seed: number): (n: number) => number {
  let s = seed | 0;
  return (n) => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}
const rnd = prng(SEED);
const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)]!;
const sometimes = (oneIn: number): boolean => rnd(oneIn) === 0;

const STRINGS = ['', 'x'.repeat(100_000), '../../escape', '/etc/passwd', 'pages-1.img', 'a/b', '.hidden', '\u0000\u0001', 'é'.repeat(40_000), 'a'.repeat(65)];
const U64 = ['0', '1', '2', '18446744073709551615', '9223372036854775808'];
const U32 = [0, 1, 2 ** 31, 2 ** 32 - 1];

const str = (s: string): string => (sometimes(8) ? pick(STRINGS) : s);
const u64 = (s: string): string => (sometimes(6) ? pick(U64) : s);
const u32 = (n: number): number => (sometimes(6) ? pick(U32) : n);
function bytes(b: Buffer): Buffer {
  if (!sometimes(4)) return b;
  const c = Buffer.from(b);
  switch (rnd(4)) {
    case 0:
      return c.subarray(0, rnd(c.length + 1)); // truncated
    case 1:
      if (c.length > 0) c[rnd(c.length)]! ^= 1 << rnd(8); // one bit flipped
      return c;
    case 2:
      return Buffer.concat([c, Buffer.alloc(1 + rnd(4096), rnd(256))]); // grown
    default:
      return Buffer.alloc(0);
  }
}

let root: string;
let d: DestUnderTest;
afterAll(async () => {
  await d?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${CALL_DEADLINE_MS} ms`)), CALL_DEADLINE_MS)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** StreamPages with the given messages; resolves undefined on OK, the rebuilt error otherwise. */
function streamPages(client: DestUnderTest['client'], messages: readonly m.PageBatchMessage[]): Promise<unknown> {
  const call = (client.raw.StreamPages as () => grpc.ClientDuplexStream<m.PageBatchMessage, m.PageAck>)();
  return new Promise((resolve, reject) => {
    call.on('data', () => undefined);
    call.on('error', (err: grpc.ServiceError) => reject(fromServiceError(err, new FerryError('PAGE_STREAM_FAILED', { detail: err.message }))));
    call.on('status', (s: grpc.StatusObject) => s.code === grpc.status.OK && resolve(undefined));
    for (const msg of messages) call.write(msg);
    call.end();
  });
}

/** Bytes that are no valid message of the method (grpc-js refuses them before the handler runs). */
function garbage(client: DestUnderTest['client'], method: string): Promise<unknown> {
  const raw = Buffer.alloc(rnd(256));
  for (let i = 0; i < raw.length; i++) raw[i] = rnd(256);
  return new Promise((resolve, reject) => {
    client.raw.makeUnaryRequest(
      `/ferry.v1.Dest/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      raw,
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (err) => (err ? reject(Object.assign(err, { garbage: true })) : resolve(undefined)),
    );
  });
}

it(`${CALLS} malformed, truncated, oversized and reordered calls: every one answered in time and coded`, async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-fuzz-'));
  const lines: string[] = [];
  d = await startDest({ workDir: join(root, 'work'), log: createLogger({ side: 'dest' }, (l) => lines.push(l), 'info'), limits: { streamIdleMs: 2_000 } });
  const live: { id: string; epoch: string; seq: number }[] = [];
  const outcomes = new Map<string, number>();
  const uncoded: string[] = [];
  const count = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  const t0 = performance.now();

  for (let i = 0; i < CALLS; i++) {
    if (live.length < 4 || sometimes(20)) {
      const req = prepareRequest({ epoch: String(1 + rnd(1_000_000)) });
      await d.client.prepare(req).then(
        () => live.push({ id: req.migrationId, epoch: req.epoch, seq: 0 }),
        () => undefined,
      );
      while (live.length > 12) {
        const old = live.shift()!;
        await d.client.abort({ migrationId: old.id, epoch: old.epoch, reason: 'fuzz' }).catch(() => undefined);
      }
    }
    const s = live.length > 0 && !sometimes(10) ? pick(live) : { id: randomUUID(), epoch: EPOCH, seq: 0 };
    const id = str(s.id);
    const epoch = u64(s.epoch);
    const kind = rnd(8);
    let call: Promise<unknown>;
    switch (kind) {
      case 0: {
        const r = prepareRequest({ migrationId: id, epoch, taskName: str('fuzz'), expectedBytes: u64('0'), protocolVersion: u32(1) });
        if (sometimes(4)) r.requiredPids = Array.from({ length: pick([1, 3, 5000]) }, () => u32(1 + rnd(4_000_000)));
        // A session it opened joins the pool (and leaves it like the others): the slots do not fill up.
        call = d.client.prepare(r).then((res) => {
          if (!live.some((x) => x.id === r.migrationId)) live.push({ id: r.migrationId, epoch: r.epoch, seq: 0 });
          return res;
        });
        break;
      }
      case 1:
      case 2: {
        const pages = Array.from({ length: 1 + rnd(64) }, (_, k) => (sometimes(3) ? rnd(100_000) : 1000 + k));
        const b = handBatch(pages, { zero: sometimes(3) ? 'all' : undefined, breakHashOf: sometimes(10) ? pages[0] : undefined });
        const seq = sometimes(8) ? pick([0, s.seq, s.seq - 1]) : ++s.seq; // repeated or going back, sometimes
        const msg: m.PageBatchMessage = { migrationId: id, epoch, seq: u64(String(Math.max(0, seq))), round: u32(0), task: u32(1 + rnd(3)), pageNumbers: bytes(b.pageNumbers), hashes: bytes(b.hashes), kinds: bytes(b.kinds), data: bytes(b.data) };
        call = streamPages(d.client, sometimes(4) ? [msg, { ...msg, seq: msg.seq }] : [msg]);
        break;
      }
      case 3: {
        const name = str(pick(['inventory.img', 'pstree.img', 'pagemap-1.img', 'core-1.img', 'mm-1.img']));
        const data = bytes(Buffer.from('criu image bytes'));
        const offset = sometimes(4) ? pick([1, 7, 2 ** 40]) : 0; // a gap, sometimes
        call = upload(d.client, [chunk(id, name, data, offset, sometimes(4) ? rnd(64) : data.length)], epoch);
        break;
      }
      case 4:
        call = d.client.restore({
          migrationId: id,
          epoch,
          pages: sometimes(2) ? [] : [{ pagemapImage: str('pagemap-1.img'), task: u32(1), hashes: bytes(Buffer.alloc(32)) }],
          timeoutMs: u32(1000),
          commitLeaseMs: u32(1000),
        });
        break;
      case 5:
        call = d.client.commit({ migrationId: id, epoch });
        break;
      case 6:
        call = sometimes(2) ? d.client.abort({ migrationId: id, epoch, reason: str('fuzz') }) : d.client.negotiate({ source: { ...sourcePeer([u32(1)]), hostname: str('fuzz'), features: sometimes(4) ? Array.from({ length: 100 }, () => 'f') : [] } });
        break;
      default:
        call = garbage(d.client, pick(['Negotiate', 'Prepare', 'Restore', 'Commit', 'Abort']));
    }
    try {
      await within(call, `call ${i} (kind ${kind})`);
      count('ok');
    } catch (e) {
      if ((e as { garbage?: boolean }).garbage) {
        count(`undecodable: grpc ${(e as grpc.ServiceError).code}`);
        continue;
      }
      const key = e instanceof FerryError ? e.key : `not a FerryError: ${String(e)}`;
      count(key);
      // A failed restore removes its session: so does the pool.
      if (key === 'SESSION_NOT_FOUND' && live.includes(s)) live.splice(live.indexOf(s), 1);
      if (!(e instanceof FerryError) || UNCODED.has(e.key)) uncoded.push(`call ${i} kind ${kind}: ${key} ${(e as Error).message}`.slice(0, 300));
    }
  }

  const seconds = (performance.now() - t0) / 1000;
  console.log(`fuzz (seed ${SEED}): ${CALLS} calls in ${seconds.toFixed(1)} s: ${JSON.stringify(Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])))}`);
  expect(uncoded).toEqual([]);
  // Nothing outside the work dir; inside, only Ferry's own entries.
  expect(readdirSync(root)).toEqual(['work']);
  for (const name of readdirSync(join(root, 'work'))) expect(name === 'logs' || name === '.ferry-work-dir' || MIGRATION_ID.test(name), name).toBe(true);
  expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(8192);
  await d.client.negotiate({ source: sourcePeer([1]) });
}, 120_000 + CALLS * 20);
