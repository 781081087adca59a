/**
 * The dest's Fill handler (dest-service.ts) over real gRPC, against a fake pager on the session's control socket:
 * a filling session is revived from a hand-written journal (as after an agent restart), so no CRIU is needed. A
 * mixed request goes to the pager as CONFIRM runs and REPLACE frames; a second call opens with FillReady (what
 * went to the pager on the first) before any want, and gets again every want not answered yet; a confirm of a
 * remote page is refused and the session outlives any number of broken calls; FillDone carries the pager's wait
 * stats. Also the pure parts: checkFillRequest, the ledger of forwarded pages, and the Restore's remote checks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destJournalDir } from '../../dest-agent/dest-journal.js';
import { checkFillRequest, fillDone, type FillBounds } from '../../dest-agent/lazy/fill-messages.js';
import { ForwardedPages } from '../../dest-agent/lazy/forwarded-pages.js';
import { encodeFrame, FRAME_HEADER_BYTES, FrameType } from '../../dest-agent/lazy/pager-control.js';
import { pagerPaths } from '../../dest-agent/lazy/pager-link.js';
import { encodePlan, REMOTE_PAGE, type PlanPage } from '../../dest-agent/lazy/pager-plan.js';
import { checkRemoteBits, checkRemoteInLazyEntries } from '../../dest-agent/lazy/remote-pages.js';
import { markSessionDir } from '../../dest-agent/work-dir.js';
import { PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { FerryError, isFerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { JournalFile } from '../../shared/journal/journal-file.js';
import { parseStat } from '../../shared/kernel/proc-status.js';
import type * as m from '../../shared/transport/messages.js';
import { startDest, type DestUnderTest } from '../support/dest-grpc.js';

const PS = 4096;
const ID = randomUUID();
const refused = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    if (isFerryError(e, 'REQUEST_INVALID')) return e.detail ?? '';
    throw e;
  }
  throw new Error('expected REQUEST_INVALID, nothing was thrown');
};
const req = (over: Partial<m.FillRequest>): m.FillRequest => ({ migrationId: ID, epoch: '1', task: 1, firstIndex: '0', count: 0, data: Buffer.alloc(0), ...over });
const pagesOf = (n: number, fill = 0): Buffer => Buffer.alloc(n * PS, fill);

describe('checkFillRequest: mixed requests split into the pager frames', () => {
  // Task 1: 2048 pages, pages 8..11 and 1000..1199 remote.
  const remote = Buffer.alloc(256);
  for (const k of [8, 9, 10, 11, ...Array.from({ length: 200 }, (_, i) => 1000 + i)]) remote[k >>> 3]! |= 1 << (k & 7);
  const bounds: FillBounds = { pages: new Map([[1, 2048]]), remote: new Map([[1, remote]]) };

  it('the opening message has no steps; old requests are one run', () => {
    expect(checkFillRequest(req({}), bounds, PS)).toEqual([]);
    expect(checkFillRequest(req({ firstIndex: '0', count: 8 }), bounds, PS)).toEqual([{ kind: 'confirm', first: 0, count: 8 }]);
    const all = checkFillRequest(req({ firstIndex: '1000', count: 130, data: pagesOf(130) }), bounds, PS);
    expect(all.map((s) => [s.kind, s.first, s.count])).toEqual([
      ['replace', 1000, 64],
      ['replace', 1064, 64],
      ['replace', 1128, 2],
    ]);
  });

  it('with_data: confirm runs and REPLACE frames of <= 64 pages, each frame its own slice of the data in page order', () => {
    // Pages 0..7 confirmed, 8..11 bytes (remote), 12..15 confirmed, 16..99 bytes.
    const count = 100;
    const withData = Buffer.alloc(Math.ceil(count / 8));
    for (let k = 0; k < count; k++) if ((k >= 8 && k < 12) || k >= 16) withData[k >>> 3]! |= 1 << (k & 7);
    const n = 4 + 84;
    const data = Buffer.concat(Array.from({ length: n }, (_, i) => pagesOf(1, i)));
    const steps = checkFillRequest(req({ firstIndex: '0', count, withData, data }), bounds, PS);
    expect(steps.map((s) => [s.kind, s.first, s.count])).toEqual([
      ['confirm', 0, 8],
      ['replace', 8, 4],
      ['confirm', 12, 4],
      ['replace', 16, 64],
      ['replace', 80, 20],
    ]);
    const r = steps.filter((s) => s.kind === 'replace');
    expect(r.map((s) => s.data[0])).toEqual([0, 4, 68]);
    expect(r.reduce((k, s) => k + s.data.length, 0)).toBe(data.length);
  });

  it('refuses a confirm of a remote page, a data length that is not popcount pages, a with_data of the wrong length or with bits past the count', () => {
    expect(refused(() => checkFillRequest(req({ firstIndex: '0', count: 12 }), bounds, PS))).toMatch(/page 8 is remote/);
    const withData = Buffer.from([0x0f, 0x00]); // pages 8..11 confirmed: remote
    expect(refused(() => checkFillRequest(req({ firstIndex: '4', count: 16, withData: Buffer.from([0x0f, 0x00]), data: pagesOf(4) }), bounds, PS))).toMatch(/page 8 is remote/);
    expect(refused(() => checkFillRequest(req({ firstIndex: '0', count: 16, withData, data: pagesOf(3) }), bounds, PS))).toMatch(/bytes of data for 4 pages/);
    expect(refused(() => checkFillRequest(req({ firstIndex: '0', count: 16, withData: Buffer.from([0x0f]), data: pagesOf(4) }), bounds, PS))).toMatch(/with_data has 1 bytes/);
    expect(refused(() => checkFillRequest(req({ firstIndex: '0', count: 4, withData: Buffer.from([0x1f]), data: pagesOf(5) }), bounds, PS))).toMatch(/past the request/);
    expect(refused(() => checkFillRequest(req({ firstIndex: '0', count: 0, withData: Buffer.from([1]), data: pagesOf(1) }), bounds, PS))).toMatch(/count 0/);
    // All pages with data in with_data and data for them: fine; bounds as before.
    expect(checkFillRequest(req({ firstIndex: '8', count: 4, withData: Buffer.from([0x0f]), data: pagesOf(4) }), bounds, PS)).toHaveLength(1);
    expect(refused(() => checkFillRequest(req({ firstIndex: '2047', count: 2 }), bounds, PS))).toMatch(/outside/);
  });

  it('FillDone carries the pager wait stats', () => {
    expect(fillDone({ filledPages: 5, remotePages: 3, waitP50Us: 10, waitP99Us: 20, waitMaxUs: 30 })).toMatchObject({ filledPages: '5', remotePages: '3', waitP50Us: '10', waitP99Us: '20', waitMaxUs: '30', faults: '0' });
  });
});

describe('the ledger of forwarded pages', () => {
  it('marks confirmed and replaced pages, counts fresh remote ones, answers wants, and reports FillReady of ceil(pages/8) bytes', () => {
    const f = new ForwardedPages({ pages: new Map([[1, 20], [2, 8]]), remote: new Map([[1, Buffer.from([0, 0x0f, 0])]]) });
    expect(f.ready()).toEqual([]);
    f.markConfirmed(1, 0, 8);
    expect(f.markReplaced(1, 8, 6)).toBe(4); // 8..11 remote, 12..13 not
    expect(f.markReplaced(1, 8, 6)).toBe(0); // not twice
    expect(f.ready()).toEqual([{ task: 1, pages: Buffer.from([0xff, 0x3f, 0x00]) }]);
    expect(f.answers({ task: 1, index: 2, count: 10, bytes: false })).toBe(true);
    expect(f.answers({ task: 1, index: 2, count: 10, bytes: true })).toBe(false); // 2..7 only confirmed
    expect(f.answers({ task: 1, index: 13, count: 2, bytes: false })).toBe(false);
    expect(f.answers({ task: 2, index: 0, count: 1, bytes: false })).toBe(false);
    f.markConfirmed(9, 0, 1); // a task of no restore: ignored
    f.clear();
    expect(f.ready()).toEqual([]);
  });
});

describe("the Restore's remote bits", () => {
  const man = (over: Partial<m.PagesImageManifest>): m.PagesImageManifest => ({ pagemapImage: 'pagemap-1.img', task: 1, hashes: Buffer.alloc(12 * 16), unconfirmed: Buffer.from([0xff, 0x0f]), remote: Buffer.from([0xf0, 0x00]), ...over });
  const pm = { entries: [{ vaddr: 0x1000n, firstPage: 1, nrPages: 4, flags: PE_PRESENT }, { vaddr: 0x10000n, firstPage: 16, nrPages: 8, flags: PE_LAZY | PE_PRESENT }] };

  it('takes a lazy restore whose remote pages are unconfirmed and in lazy entries of a task pagemap', () => {
    expect(() => checkRemoteBits([man({})], 'RESTORE_MODE_LAZY')).not.toThrow();
    expect(() => checkRemoteInLazyEntries(man({}), pm)).not.toThrow();
    expect(() => checkRemoteBits([man({ remote: Buffer.alloc(0) })], 'RESTORE_MODE_EAGER')).not.toThrow();
  });

  it('refuses remote bits with an eager restore, of the wrong length, past the pages, not unconfirmed, outside lazy entries or a task pagemap', () => {
    expect(refused(() => checkRemoteBits([man({})], 'RESTORE_MODE_EAGER'))).toMatch(/only for a lazy restore/);
    expect(refused(() => checkRemoteBits([man({})], undefined))).toMatch(/only for a lazy restore/);
    expect(refused(() => checkRemoteBits([man({ remote: Buffer.from([0xf0]) })], 'RESTORE_MODE_LAZY'))).toMatch(/1 bytes for 12 pages/);
    expect(refused(() => checkRemoteBits([man({ remote: Buffer.from([0xf0, 0x10]) })], 'RESTORE_MODE_LAZY'))).toMatch(/past its 12 pages/);
    expect(refused(() => checkRemoteBits([man({ unconfirmed: Buffer.from([0x7f, 0x0f]) })], 'RESTORE_MODE_LAZY'))).toMatch(/not marked unconfirmed/);
    expect(refused(() => checkRemoteBits([man({ unconfirmed: Buffer.alloc(0) })], 'RESTORE_MODE_LAZY'))).toMatch(/not marked unconfirmed/);
    expect(refused(() => checkRemoteInLazyEntries(man({ remote: Buffer.from([0xf8, 0x00]) }), pm))).toMatch(/page #3 is remote but CRIU restores it/);
    expect(refused(() => checkRemoteInLazyEntries(man({ pagemapImage: 'pagemap-shmem-7.img' }), pm))).toMatch(/not a task's/);
  });
});

/** A fake pager on the control socket: HELLO on connecting, WANTs on demand, every frame it gets recorded. */
class FakePager {
  readonly frames: { type: number; task: number; index: number; count: number; payload: Buffer }[] = [];
  private sock: Socket | undefined;
  private buf = Buffer.alloc(0);
  private readonly server: Server;
  private readonly connected: Promise<void>;

  constructor(path: string) {
    let onConnect!: () => void;
    this.connected = new Promise((r) => (onConnect = r));
    this.server = createServer((s) => {
      this.sock = s;
      s.write(encodeFrame({ type: FrameType.HELLO, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from('{"state":"serving","pid":1}') }));
      s.on('data', (c: Buffer) => this.onData(c));
      onConnect();
    });
    this.server.listen(path);
  }

  private onData(c: Buffer): void {
    this.buf = Buffer.concat([this.buf, c]);
    while (this.buf.length >= FRAME_HEADER_BYTES) {
      const len = this.buf.readUInt32LE(28);
      if (this.buf.length < FRAME_HEADER_BYTES + len) return;
      const h = this.buf;
      this.frames.push({ type: h.readUInt32LE(0), task: h.readUInt32LE(4), index: Number(h.readBigUInt64LE(8)), count: Number(h.readBigUInt64LE(16)), payload: Buffer.from(h.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len)) });
      this.buf = this.buf.subarray(FRAME_HEADER_BYTES + len);
    }
  }

  async want(index: number, count: number, bytes = false): Promise<void> {
    await this.connected;
    this.sock!.write(encodeFrame({ type: FrameType.WANT, task: 1, index, count, flags: bytes ? 1 : 0 }));
  }

  async send(type: number, stats: Record<string, number>): Promise<void> {
    await this.connected;
    this.sock!.write(encodeFrame({ type, task: 0, index: 0, count: 0, flags: 0, payload: Buffer.from(JSON.stringify(stats)) }));
  }

  close(): void {
    this.sock?.destroy();
    this.server.close();
  }
}

async function until<T>(what: string, fn: () => T | undefined, ms = 5_000): Promise<T> {
  for (let waited = 0; ; waited += 10) {
    const v = fn();
    if (v !== undefined) return v;
    if (waited > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One Fill call, raw: the events it got, and its end. */
function openFill(dest: DestUnderTest): { call: grpc.ClientDuplexStream<m.FillRequest, m.FillEvent>; events: m.FillEvent[]; ended: Promise<Error | undefined> } {
  const call = (dest.client.raw.Fill as () => grpc.ClientDuplexStream<m.FillRequest, m.FillEvent>)();
  const events: m.FillEvent[] = [];
  call.on('data', (e: m.FillEvent) => events.push(e));
  const ended = new Promise<Error | undefined>((resolve) => {
    call.on('error', (e: grpc.ServiceError) => resolve(fromServiceError(e, new FerryError('INTERNAL', { detail: e.message }))));
    call.on('status', (st: grpc.StatusObject) => {
      if (st.code === grpc.status.OK) resolve(undefined);
    });
  });
  call.write(req({}));
  return { call, events, ended };
}

describe('the Fill handler against a fake pager (a filling session taken over after a restart)', () => {
  let dest: DestUnderTest;
  let pager: FakePager;
  let sleeper: ChildProcess;

  beforeAll(async () => {
    const workDir = await mkdtemp(join(tmpdir(), 'ferry-unit-fill-'));
    const dir = join(workDir, ID);
    mkdirSync(join(dir, 'images'), { recursive: true });
    await markSessionDir(dir, ID);
    const paths = pagerPaths(dir, join(dir, 'images'));
    mkdirSync(paths.dir);
    // Task 1: 16 pages, 0..7 from the store, 8..15 remote.
    const pages: PlanPage[] = Array.from({ length: 16 }, (_, k) => (k < 8 ? { file: 0, offset: k * PS, confirmed: false } : { file: REMOTE_PAGE, offset: 0, confirmed: false }));
    writeFileSync(paths.plan, encodePlan({ files: ['/nonexistent/level'], tasks: [{ nsPid: 1, ranges: [{ startAddr: 0x10000n, nPages: 16, firstIndex: 0 }], pages, hashes: Buffer.alloc(16 * 16) }] }));
    pager = new FakePager(paths.control);
    // Any live process stands for the pager (the link knows it by pid and start time) and the copy.
    sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
    await until('the sleeper', () => (sleeper.pid ? true : undefined));
    const startTime = parseStat(readFileSync(`/proc/${sleeper.pid}/stat`, 'utf8')).startTime;
    const journal = (await JournalFile.open(destJournalDir(workDir), ID, 'dest.journal-write'))!;
    await journal.record('receiving', { epoch: '1', peer: '127.0.0.1' });
    await journal.record('restored', { restoredPid: sleeper.pid, startTime, leaseUntil: Date.now() + 60_000, pagerPid: sleeper.pid, pagerStartTime: startTime });
    await journal.record('filling', { restoredPid: sleeper.pid, resumedAtUs: '1' });
    await journal.close();
    // The session idle bound is short: a filling session must not care (it waits for Fill calls for ever).
    dest = await startDest({ workDir, limits: { sessionIdleMs: 100 } });
    await dest.service.recover();
  });

  afterAll(async () => {
    pager?.close();
    await dest?.close();
    sleeper?.kill('SIGKILL');
  });

  it('splits, replays wants, opens with FillReady, refuses a confirm of a remote page, and ends with the stats', async () => {
    await pager.want(8, 4); // remote pages the copy faulted on
    await pager.want(2, 1);
    const one = openFill(dest);
    await until('both wants', () => (one.events.length >= 2 ? true : undefined));
    expect(one.events.map((e) => e.detail)).toEqual(['wanted', 'wanted']); // nothing forwarded yet: no ready
    expect(one.events.map((e) => [e.wanted?.firstIndex, e.wanted?.count])).toEqual([['8', 4], ['2', 1]]);
    // One mixed request: 0..7 confirmed, 8..11 bytes.
    const data = Buffer.concat([pagesOf(1, 1), pagesOf(1, 2), pagesOf(1, 3), pagesOf(1, 4)]);
    one.call.write(req({ firstIndex: '0', count: 12, withData: Buffer.from([0x00, 0x0f]), data }));
    await until('the frames', () => (pager.frames.length >= 2 ? true : undefined));
    expect(pager.frames.map((f) => [f.type, f.index, f.count, f.payload.length])).toEqual([
      [FrameType.CONFIRM, 0, 8, 0],
      [FrameType.REPLACE, 8, 4, 4 * PS],
    ]);
    expect(pager.frames[1]!.payload.equals(data)).toBe(true);
    expect((await dest.metrics.remotePages.get()).values[0]?.value).toBe(4);
    // Once handed to the pager, the request's bytes are acked (the source's window).
    await until('the ack', () => (one.events.some((e) => e.ack) ? true : undefined));
    expect(one.events.find((e) => e.ack)?.ack).toEqual({ dataBytes: String(4 * PS) });
    // The call breaks; a want comes while no call is open; the session waits (longer than its idle bound).
    one.call.cancel();
    await one.ended;
    await pager.want(14, 2);
    await new Promise((r) => setTimeout(r, 300));

    const two = openFill(dest);
    await until('ready and the open want', () => (two.events.length >= 2 ? true : undefined));
    await new Promise((r) => setTimeout(r, 50));
    expect(two.events[0]).toMatchObject({ ready: { task: 1, pages: Buffer.from([0xff, 0x0f]) } });
    // Only the want not answered yet: 8..11 and 2 went to the pager on the first call.
    expect(two.events.slice(1).map((e) => [e.detail, e.wanted?.firstIndex, e.wanted?.count])).toEqual([['wanted', '14', 2]]);
    // A confirm of remote page 14: refused, the call ends with REQUEST_INVALID, nothing reaches the pager.
    two.call.write(req({ firstIndex: '14', count: 1 }));
    const e = await two.ended;
    expect(isFerryError(e, 'REQUEST_INVALID')).toBe(true);
    expect(pager.frames).toHaveLength(2);

    // The session outlives the broken calls; the pager's DONE ends the next one with its stats.
    const three = openFill(dest);
    await until('ready', () => (three.events.length >= 1 ? true : undefined));
    expect(three.events[0]?.ready?.pages).toEqual(Buffer.from([0xff, 0x0f]));
    await pager.send(FrameType.DONE, { filledPages: 16, totalPages: 16, faults: 3, faultsWaited: 2, replacedPages: 4, remotePages: 8, waitP50Us: 120, waitP99Us: 900, waitMaxUs: 950 });
    expect(await three.ended).toBeUndefined();
    expect(three.events.at(-1)?.done).toMatchObject({ filledPages: '16', remotePages: '8', waitP50Us: '120', waitP99Us: '900', waitMaxUs: '950' });
  }, 30_000);
});
