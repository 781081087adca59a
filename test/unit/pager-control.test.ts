/**
 * The pager's control socket: the frame codec (dest-agent/lazy/pager-control.ts) on crafted bytes, the client
 * against a fake pager, and the real pager binary (no CRIU needed: it listens, answers HELLO, closes a connection
 * that sends a bad frame and carries on, replaces its guardian, and aborts on SIGTERM).
 */
import { canRun } from '../../testbed/requirements.js';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  connectPager,
  encodeFrame,
  FrameParser,
  FrameType,
  FRAME_HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  type PagerWant,
} from '../../dest-agent/lazy/pager-control.js';
import { encodePlan, REMOTE_PAGE } from '../../dest-agent/lazy/pager-plan.js';
import { abortPager, PAGER_BINARY, pagerAlive, readPagerStatus, startPager, type StartedPager } from '../../dest-agent/lazy/pager-process.js';
import { isFerryError } from '../../shared/errors/ferry-error.js';
import { parseStat } from '../../shared/kernel/proc-status.js';
import { repoRoot } from '../../shared/repo-root.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-ctl-'));
afterAll(() => {
  if (!process.env.FERRY_KEEP) rmSync(dir, { recursive: true, force: true });
});

async function waitForText(file: string, re: RegExp): Promise<void> {
  for (let i = 0; i < 250; i++) {
    if (existsSync(file) && re.test(readFileSync(file, 'utf8'))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${file} never matched ${re}`);
}

function header(type: number, payloadLen: number, over: Partial<{ task: number; index: bigint; count: bigint; flags: number }> = {}): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32LE(type, 0);
  h.writeUInt32LE(over.task ?? 1, 4);
  h.writeBigUInt64LE(over.index ?? 0n, 8);
  h.writeBigUInt64LE(over.count ?? 1n, 16);
  h.writeUInt32LE(over.flags ?? 0, 24);
  h.writeUInt32LE(payloadLen, 28);
  return h;
}

describe('frame codec', () => {
  it('encodes the 32-byte header and parses frames split anywhere across chunks', () => {
    const a = encodeFrame({ type: FrameType.WANT, task: 7, index: 2 ** 40, count: 3, flags: 1 });
    expect([a.readUInt32LE(0), a.readUInt32LE(4), a.readBigUInt64LE(8), a.readBigUInt64LE(16), a.readUInt32LE(24), a.readUInt32LE(28)]).toEqual([102, 7, 2n ** 40n, 3n, 1, 0]);
    const b = encodeFrame({ type: FrameType.DONE, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from('{"filledPages":1}') });
    const all = Buffer.concat([a, b, a]);
    for (const cut of [1, 5, 31, 32, 33, a.length, a.length + 40]) {
      const p = new FrameParser();
      const frames = [...p.push(all.subarray(0, cut)), ...p.push(all.subarray(cut))];
      expect(frames.map((f) => f.type)).toEqual([102, 104, 102]);
      expect(frames[0]).toMatchObject({ task: 7, index: 2 ** 40, count: 3, flags: 1 });
      expect(frames[1]?.payload.toString()).toBe('{"filledPages":1}');
    }
  });

  it('refuses an unknown type, a payload over the bound, an index beyond 2^53', () => {
    expect(() => new FrameParser().push(header(77, 0))).toThrow(/unknown frame type 77/);
    expect(() => new FrameParser().push(header(FrameType.WANT, MAX_PAYLOAD_BYTES + 1))).toThrow(/exceeds/);
    expect(() => new FrameParser().push(header(FrameType.WANT, 0, { index: 2n ** 60n }))).toThrow(/out of range/);
    expect(() => encodeFrame({ type: 2, task: 1, index: 0, count: 65, flags: 0, payload: Buffer.alloc(MAX_PAYLOAD_BYTES + 1) })).toThrow(/exceeds/);
  });
});

describe('the client against a fake pager', () => {
  let server: Server | undefined;
  afterEach(() => server?.close());

  function fakePager(path: string, onConnect: (s: Socket) => void): Promise<void> {
    rmSync(path, { force: true });
    server = createServer(onConnect);
    return new Promise((resolve) => server?.listen(path, resolve));
  }

  it('delivers a WANT that came in the same chunk as the HELLO to listeners attached after the await', async () => {
    const path = join(dir, 'fake1.sock');
    await fakePager(path, (s) => {
      s.write(Buffer.concat([encodeFrame({ type: FrameType.HELLO, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from('{"state":"serving","pid":1}') }), encodeFrame({ type: FrameType.WANT, task: 1, index: 5, count: 2, flags: 1 })]));
    });
    const c = await connectPager(path);
    const wants: PagerWant[] = [];
    c.on('want', (w) => wants.push(w));
    await new Promise((r) => setTimeout(r, 50));
    expect(c.hello?.state).toBe('serving');
    expect(wants).toEqual([{ task: 1, index: 5, count: 2, bytes: true }]);
    c.close();
  });

  it('a bad frame from the pager ends the connection with a reason; no HELLO in time is PAGER_UNAVAILABLE', async () => {
    const path = join(dir, 'fake2.sock');
    await fakePager(path, (s) => {
      s.write(encodeFrame({ type: FrameType.HELLO, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from('{"state":"serving"}') }));
      setTimeout(() => s.write(header(99, 0)), 20);
    });
    const c = await connectPager(path);
    const reason = await new Promise<string>((r) => c.once('closed', r));
    expect(reason).toMatch(/bad frame.*unknown frame type 99/);
    await expect(c.confirm(1, 0, 1)).rejects.toThrow(/closed/);

    const silent = join(dir, 'fake3.sock');
    server?.close();
    await fakePager(silent, () => undefined);
    const err = await connectPager(silent, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(isFerryError(err, 'PAGER_UNAVAILABLE')).toBe(true);
    const bad = await connectPager(join(dir, 'nobody.sock'), { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(isFerryError(bad, 'PAGER_UNAVAILABLE')).toBe(true);
  });

  it('splits REPLACE into frames of at most 64 pages', async () => {
    const path = join(dir, 'fake4.sock');
    const got: Buffer[] = [];
    await fakePager(path, (s) => {
      s.write(encodeFrame({ type: FrameType.HELLO, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from('{}') }));
      s.on('data', (d) => got.push(d));
    });
    const c = await connectPager(path);
    await c.replace(3, 10, Buffer.alloc(100 * 4096, 7));
    await expect(c.replace(3, 10, Buffer.alloc(100))).rejects.toThrow(/whole pages/);
    await new Promise((r) => setTimeout(r, 50));
    const all = Buffer.concat(got);
    expect([all.readUInt32LE(0), all.readUInt32LE(4), all.readBigUInt64LE(8), all.readBigUInt64LE(16), all.readUInt32LE(28)]).toEqual([2, 3, 10n, 64n, 64 * 4096]);
    const second = FRAME_HEADER_BYTES + 64 * 4096;
    expect([all.readBigUInt64LE(second + 8), all.readBigUInt64LE(second + 16)]).toEqual([74n, 36n]);
    expect(all.length).toBe(2 * FRAME_HEADER_BYTES + 100 * 4096);
    c.close();
  });
});

const binary = join(repoRoot(), PAGER_BINARY);
const built = canRun('the real pager on its control socket', { ok: existsSync(binary), reason: `needs ${binary} (built by npm ci)` });
describe.skipIf(!built)('the real pager on its control socket (no restore)', () => {
  const started: StartedPager[] = [];
  afterAll(async () => {
    for (const p of started) {
      if (pagerAlive(p)) process.kill(p.pid, 'SIGKILL');
      await Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))]);
    }
  });

  async function start(name: string, remote = (_k: number): boolean => false): Promise<{ pager: StartedPager; control: string; status: string; dir: string; log: string }> {
    const d = join(dir, name);
    mkdirSync(d);
    const store = join(d, 'store');
    writeFileSync(store, Buffer.alloc(8 * 4096));
    const plan = join(d, 'plan');
    const pages = Array.from({ length: 8 }, (_, k) => (remote(k) ? { file: REMOTE_PAGE, offset: 0, confirmed: false } : { file: 0, offset: k * 4096, confirmed: false }));
    writeFileSync(plan, encodePlan({ files: [store], tasks: [{ nsPid: 1, ranges: [{ startAddr: 0x10000n, nPages: 8, firstIndex: 0 }], pages, hashes: Buffer.alloc(8 * 16) }] }));
    const o = { binary, planFile: plan, socketPath: join(d, 'lazy-pages.socket'), controlPath: join(d, 'control.sock'), statusFile: join(d, 'status'), pidFile: join(d, 'restored.pid'), logFile: join(d, 'pager.log'), threads: 1 };
    const pager = await startPager(o);
    started.push(pager);
    expect(existsSync(o.socketPath)).toBe(true);
    return { pager, control: o.controlPath, status: o.statusFile, dir: d, log: o.logFile };
  }

  it('post-copy: counts the remote pages, keeps REPLACE bytes in an unlinked spill file, leaves a CONFIRM of a remote page unready', async () => {
    const { pager, control, status, dir: d, log } = await start('remote', (k) => k >= 4);
    const c = await connectPager(control);
    expect(c.hello).toMatchObject({ remotePages: 4, waitP50Us: 0, waitP99Us: 0, waitMaxUs: 0 });
    // One shared mapping of 8 pages (the plan's sum), its file already gone from the directory.
    const maps = readFileSync(`/proc/${pager.pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('replaced.pages'));
    expect(maps).toHaveLength(1);
    expect(maps[0]).toMatch(/^([0-9a-f]+)-([0-9a-f]+) rw-s .*\/replaced\.pages \(deleted\)$/);
    const [lo, hi] = (maps[0] as string).split(' ')[0]!.split('-').map((x) => BigInt(`0x${x}`));
    expect(hi! - lo!).toBe(8n * 4096n);
    expect(existsSync(join(d, 'replaced.pages'))).toBe(false);
    await c.confirm(1, 2, 4); // pages 4 and 5 are remote
    await c.replace(1, 6, Buffer.alloc(2 * 4096, 7));
    await waitForText(log, /CONFIRM of task 1 pages \[2, \+4\) covers 2 remote page\(s\): left unready/);
    expect(c.closed).toBe(false); // a guard, not a bad frame
    const st = await readPagerStatus(status);
    expect(st).toMatchObject({ remotePages: 4 });
    expect(abortPager(pager)).toBe(true);
    expect((await pager.exited).code).toBe(4);
    expect(existsSync(join(d, 'replaced.pages'))).toBe(false);
    c.close();
  }, 30_000);

  it('answers HELLO with its status; a bad frame closes that connection only; a new connection replaces the old', async () => {
    const { pager, control } = await start('p1');
    const c1 = await connectPager(control);
    expect(c1.hello).toMatchObject({ state: 'listening', pid: pager.pid, filledPages: 0, threads: 1 });
    // Detached: its own session and process group, so nothing aimed at the agent's group reaches it.
    const stat = parseStat(readFileSync(`/proc/${pager.pid}/stat`, 'utf8'));
    expect([stat.session, stat.pgrp]).toEqual([pager.pid, pager.pid]);
    expect(statSync(control).mode & 0o777).toBe(0o600);
    const c2 = await connectPager(control);
    // The pager closed c1 before it sent c2 its HELLO.
    if (!c1.closed) await new Promise((r) => c1.once('closed', r));
    expect(c1.closed).toBe(true);

    const bad = async (frame: Buffer): Promise<void> => {
      const s = netConnect({ path: control });
      s.resume(); // read (and drop) the HELLO, or the EOF is never seen
      await new Promise((r) => s.once('connect', r));
      s.write(frame);
      await new Promise<void>((r) => s.once('close', () => r()));
    };
    await bad(header(77, 0)); // unknown type
    await bad(header(FrameType.CONFIRM, 0, { task: 9 })); // task not in the plan
    await bad(header(FrameType.CONFIRM, 0, { index: 5n, count: 4n })); // past the task's 8 pages
    await bad(header(FrameType.CONFIRM, 0, { count: 0n }));
    await bad(Buffer.concat([header(FrameType.REPLACE, 4096, { count: 2n }), Buffer.alloc(4096)])); // 2 pages, 1 page of bytes
    await bad(header(FrameType.REPLACE, 0x7fff_ffff)); // payload over the bound: closed at the header
    expect(pagerAlive(pager)).toBe(true);
    c2.close();
    const c3 = await connectPager(control);
    expect(c3.hello?.state).toBe('listening');
    c3.close();
  }, 30_000);

  it('replaces a guardian that dies', async () => {
    const { control } = await start('p2');
    const c1 = await connectPager(control);
    const g1 = c1.hello?.guardianPid as number;
    expect(g1).toBeGreaterThan(1);
    process.kill(g1, 'SIGKILL');
    let g2 = g1;
    for (let i = 0; i < 100 && g2 === g1; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const c = await connectPager(control);
      g2 = c.hello?.guardianPid as number;
      c.close();
    }
    expect(g2).not.toBe(g1);
    expect(() => process.kill(g2, 0)).not.toThrow();
    c1.close();
  }, 30_000);

  it('SIGTERM aborts: FAILED frame, status failed, exit 4; SIGKILL: the guardian writes failed', async () => {
    const { pager, control, status } = await start('p3');
    const c = await connectPager(control);
    const failed = new Promise<string>((r) => c.once('failed', r));
    expect(abortPager(pager)).toBe(true);
    expect((await pager.exited).code).toBe(4);
    expect(await failed).toMatch(/SIGTERM/);
    expect((await readPagerStatus(status))?.state).toBe('failed');
    expect(abortPager(pager)).toBe(false);

    const k = await start('p4');
    process.kill(k.pager.pid, 'SIGKILL');
    await k.pager.exited;
    let st = await readPagerStatus(k.status);
    for (let i = 0; i < 250 && st?.state !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      st = await readPagerStatus(k.status);
    }
    expect(st).toMatchObject({ state: 'failed', reason: 'pager died' });
  }, 30_000);
});
