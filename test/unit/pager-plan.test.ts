/**
 * The pager's plan file (dest-agent/lazy/pager-plan.ts): its byte layout, the encoder's bounds, the lazy ranges
 * split at VMA edges (on a real CRIU 4.2.1 mm image, test/fixtures/criu/lazy), the mm image decoder, and the
 * pager binary refusing bad plans (exit 2, the reason in its status file, no socket made).
 */
import { canRun } from '../../testbed/requirements.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decodePlan,
  encodePlan,
  manifestPageCount,
  planRanges,
  splitLazyPagemap,
  REMOTE_FILE,
  REMOTE_PAGE,
  ZERO_PAGE,
  type PlanInput,
  type PlanPage,
} from '../../dest-agent/lazy/pager-plan.js';
import { PAGER_BINARY } from '../../dest-agent/lazy/pager-process.js';
import { decodeMmVmas, encodeMmVmas, MAP_ANONYMOUS, MAP_PRIVATE, VMA_AREA_REGULAR, VMA_AREA_VDSO, VMA_ANON_PRIVATE, vmaCanBeLazy, type MmVma } from '../../shared/criu/mm-image.js';
import { CRIU_MAGIC, writeImage } from '../../shared/criu/image-file.js';
import { decodePagemap, PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { isFerryError } from '../../shared/errors/ferry-error.js';
import { WireWriter } from '../../shared/criu/protobuf-wire.js';
import { repoRoot } from '../../shared/repo-root.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/criu/lazy/', import.meta.url));
const PS = 4096;

function imageInvalid(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isFerryError(e, 'IMAGE_INVALID')) return e.detail ?? '';
    throw e;
  }
  throw new Error('expected IMAGE_INVALID, nothing was thrown');
}

const pages = (n: number, confirmed = true): PlanPage[] => Array.from({ length: n }, (_, k) => ({ file: 0, offset: k * PS, confirmed }));
const hashes = (n: number): Buffer => Buffer.alloc(n * 16, 0xab);

function input(over: Partial<PlanInput['tasks'][number]> = {}): PlanInput {
  return {
    files: ['/store/level-0'],
    tasks: [{ nsPid: 1, ranges: [{ startAddr: 0x10000n, nPages: 3, firstIndex: 1 }], pages: pages(4), hashes: hashes(4), ...over }],
  };
}

describe('plan encoding', () => {
  it('lays out the header, the files padded to 8 bytes, then each task', () => {
    const buf = encodePlan({
      files: ['/a/b', '/c'],
      tasks: [
        {
          nsPid: 7,
          ranges: [{ startAddr: 0x7f00_0000_0000n, nPages: 2, firstIndex: 0 }],
          pages: [
            { file: 1, offset: 8192, confirmed: true },
            { file: ZERO_PAGE, offset: 0, confirmed: false },
          ],
          hashes: Buffer.concat([Buffer.alloc(16, 1), Buffer.alloc(16, 2)]),
        },
      ],
    });
    expect(buf.toString('latin1', 0, 8)).toBe('FRYPLAN1');
    expect([buf.readUInt32LE(8), buf.readUInt32LE(12), buf.readUInt32LE(16), buf.readUInt32LE(20)]).toEqual([1, 4096, 2, 1]);
    expect(buf.readBigUInt64LE(24)).toBe(0n);
    // files: 4+4 + 4+2 = 14 bytes from 32, padded to 48
    expect(buf.readUInt32LE(32)).toBe(4);
    expect(buf.toString('utf8', 36, 40)).toBe('/a/b');
    expect(buf.subarray(46, 48)).toEqual(Buffer.alloc(2));
    let pos = 48;
    expect([buf.readUInt32LE(pos), buf.readUInt32LE(pos + 4), buf.readBigUInt64LE(pos + 8)]).toEqual([7, 1, 2n]);
    pos += 16;
    expect([buf.readBigUInt64LE(pos), buf.readBigUInt64LE(pos + 8), buf.readBigUInt64LE(pos + 16)]).toEqual([0x7f00_0000_0000n, 2n, 0n]);
    pos += 24;
    expect([buf.readUInt32LE(pos), buf.readUInt32LE(pos + 4), buf.readBigUInt64LE(pos + 8)]).toEqual([1, 1, 8192n]);
    expect([buf.readUInt32LE(pos + 16), buf.readUInt32LE(pos + 20), buf.readBigUInt64LE(pos + 24)]).toEqual([0xffff_ffff, 0, 0n]);
    pos += 32;
    expect(buf.subarray(pos, pos + 32)).toEqual(Buffer.concat([Buffer.alloc(16, 1), Buffer.alloc(16, 2)]));
    expect(buf.length).toBe(pos + 32);
    const back = decodePlan(buf);
    expect(back.files).toEqual(['/a/b', '/c']);
    expect(back.tasks[0]?.pages[1]).toEqual({ file: ZERO_PAGE, offset: 0, confirmed: false });
    expect(back.tasks[0]?.ranges).toEqual([{ startAddr: 0x7f00_0000_0000n, nPages: 2, firstIndex: 0 }]);
  });

  it('refuses what the pager would refuse', () => {
    expect(imageInvalid(() => encodePlan(input({ nsPid: 0 })))).toMatch(/bad pid/);
    expect(imageInvalid(() => encodePlan(input({ ranges: [{ startAddr: 0x10001n, nPages: 1, firstIndex: 0 }] })))).toMatch(/page aligned/);
    expect(imageInvalid(() => encodePlan(input({ ranges: [{ startAddr: 0x10000n, nPages: 4, firstIndex: 1 }] })))).toMatch(/outside the manifest/);
    expect(imageInvalid(() => encodePlan(input({ ranges: [{ startAddr: 0x10000n, nPages: 0, firstIndex: 1 }] })))).toMatch(/outside the manifest/);
    expect(
      imageInvalid(() =>
        encodePlan(input({ ranges: [{ startAddr: 0x20000n, nPages: 1, firstIndex: 0 }, { startAddr: 0x10000n, nPages: 1, firstIndex: 1 }] })),
      ),
    ).toMatch(/not ascending/);
    expect(
      imageInvalid(() =>
        encodePlan(input({ ranges: [{ startAddr: 0x10000n, nPages: 2, firstIndex: 0 }, { startAddr: 0x20000n, nPages: 2, firstIndex: 1 }] })),
      ),
    ).toMatch(/two ranges/);
    expect(imageInvalid(() => encodePlan(input({ ranges: [{ startAddr: 2n ** 64n - 4096n, nPages: 2, firstIndex: 0 }] })))).toMatch(/address space/);
    expect(imageInvalid(() => encodePlan(input({ hashes: hashes(3) })))).toMatch(/hash bytes/);
    expect(imageInvalid(() => encodePlan(input({ pages: [...pages(3), { file: 1, offset: 0, confirmed: true }] })))).toMatch(/file 1 of 1/);
    expect(imageInvalid(() => encodePlan({ ...input(), files: ['relative/path'] }))).toMatch(/absolute/);
    expect(imageInvalid(() => encodePlan({ ...input(), tasks: [input().tasks[0]!, input().tasks[0]!] }))).toMatch(/pid twice/);
    expect(imageInvalid(() => encodePlan({ files: Array.from({ length: 65537 }, () => '/f'), tasks: [] }))).toMatch(/files/);
  });

  it('post-copy: a remote page is file 0xFFFFFFFE, flags 0, offset 0, in both forms; confirmed it is refused both ways', () => {
    const remotePages: PlanPage[] = [...pages(2), { file: REMOTE_PAGE, offset: 12345, confirmed: false }, ...pages(1)];
    const buf = encodePlan(input({ pages: remotePages }));
    const at = buf.length - 4 * 32 + 2 * 16; // the third page record: after the header, path, task header, range
    expect([buf.readUInt32LE(at), buf.readUInt32LE(at + 4), buf.readBigUInt64LE(at + 8)]).toEqual([REMOTE_FILE, 0, 0n]);
    expect(decodePlan(buf).tasks[0]?.pages.map((p) => p.file)).toEqual([0, 0, REMOTE_PAGE, 0]);
    const cols = { file: Uint32Array.from([0, 0, REMOTE_FILE, 0]), offset: Float64Array.from([0, PS, 0, 3 * PS]), confirmed: Uint8Array.from([1, 1, 0, 1]) };
    expect(encodePlan(input({ pages: cols })).equals(encodePlan(input({ pages: [...pages(2), { file: REMOTE_PAGE, offset: 0, confirmed: false }, { file: 0, offset: 3 * PS, confirmed: true }] })))).toBe(true);
    expect(imageInvalid(() => encodePlan(input({ pages: [...pages(3), { file: REMOTE_PAGE, offset: 0, confirmed: true }] })))).toMatch(/remote page cannot be confirmed/);
    expect(imageInvalid(() => encodePlan(input({ pages: { ...cols, confirmed: Uint8Array.from([1, 1, 1, 1]) } })))).toMatch(/remote page cannot be confirmed/);
    expect(imageInvalid(() => encodePlan(input({ pages: [...pages(3), { file: 0xffff_fffe, offset: 0, confirmed: false }] })))).toMatch(/no file index/);
    const flagged = Buffer.from(buf);
    flagged.writeUInt32LE(1, at + 4);
    expect(imageInvalid(() => decodePlan(flagged))).toMatch(/remote page marked confirmed/);
  });

  it('decodePlan refuses truncated and trailing bytes', () => {
    const good = encodePlan(input());
    expect(imageInvalid(() => decodePlan(good.subarray(0, good.length - 1)))).toMatch(/past the end|pages/);
    expect(imageInvalid(() => decodePlan(Buffer.concat([good, Buffer.alloc(8)])))).toMatch(/after the last task/);
    const badMagic = Buffer.from(good);
    badMagic[0] = 0x58;
    expect(imageInvalid(() => decodePlan(badMagic))).toMatch(/magic/);
  });
});

describe('mm image VMAs and the lazy ranges (real CRIU 4.2.1 dump of memtest)', () => {
  const capture = JSON.parse(readFileSync(join(FIXTURE, 'capture.json'), 'utf8')) as { dataBase: string; dataPages: number; maps: string[] };
  const vmas = decodeMmVmas(readFileSync(join(FIXTURE, 'mm-1.img')), 'mm-1.img');
  const pagemap = decodePagemap(readFileSync(join(FIXTURE, 'pagemap-1.img')), 'pagemap-1.img');

  it('decodes one VMA per line of the task maps (CRIU keeps [vvar] and [vvar_vclock] as one), with flags and status', () => {
    const maps: string[] = [];
    for (const line of capture.maps) {
      const span = line.split(' ')[0] as string;
      if (line.endsWith('[vvar_vclock]')) maps.push(`${(maps.pop() as string).split('-')[0]}-${span.split('-')[1]}`);
      else maps.push(span);
    }
    expect(vmas.map((v) => `${v.start.toString(16)}-${v.end.toString(16)}`)).toEqual(maps);
    const base = BigInt(capture.dataBase);
    const data = vmas.find((v) => v.start <= base && base < v.end) as MmVma;
    expect(data.flags & (MAP_PRIVATE | MAP_ANONYMOUS)).toBe(MAP_PRIVATE | MAP_ANONYMOUS);
    expect(data.status & (VMA_AREA_REGULAR | VMA_ANON_PRIVATE)).toBe(VMA_AREA_REGULAR | VMA_ANON_PRIVATE);
    expect(vmaCanBeLazy(data)).toBe(true);
    const vdso = vmas.find((v) => (v.status & VMA_AREA_VDSO) !== 0);
    expect(vdso && vmaCanBeLazy(vdso)).toBe(false);
  });

  it('splits the lazy entries at VMA edges; every lazy page is in exactly one range, in manifest order', () => {
    const ranges = planRanges(pagemap, vmas);
    const lazyPages = pagemap.entries.filter((e) => (e.flags & PE_LAZY) !== 0).reduce((n, e) => n + e.nrPages, 0);
    expect(ranges.reduce((n, r) => n + r.nPages, 0)).toBe(lazyPages);
    expect(lazyPages).toBeGreaterThanOrEqual(capture.dataPages);
    for (const r of ranges) {
      const start = BigInt(r.startAddr);
      const end = start + BigInt(r.nPages * PS);
      expect(vmas.some((v) => v.start <= start && end <= v.end)).toBe(true);
    }
    // manifest index = pages of every entry before it (present-only ones too)
    let index = 0;
    const indexOf = new Map<bigint, number>();
    for (const e of pagemap.entries) {
      for (let k = 0; k < e.nrPages; k++) indexOf.set(e.vaddr + BigInt(k * PS), index + k);
      index += e.nrPages;
    }
    for (const r of ranges) expect(indexOf.get(BigInt(r.startAddr))).toBe(r.firstIndex);
    expect(manifestPageCount(pagemap)).toBe(index);
    // the plan encodes with these ranges
    expect(() => encodePlan({ files: ['/s'], tasks: [{ nsPid: 1, ranges, pages: pages(index), hashes: hashes(index) }] })).not.toThrow();
  });

  it('splits a lazy entry that spans two VMAs, and refuses one outside every VMA or in a VMA CRIU would not register', () => {
    const anon = { prot: 3, flags: MAP_PRIVATE | MAP_ANONYMOUS, status: VMA_AREA_REGULAR | VMA_ANON_PRIVATE };
    const two: MmVma[] = [
      { start: 0x10000n, end: 0x12000n, ...anon },
      { start: 0x12000n, end: 0x20000n, ...anon },
    ];
    const pm = { entries: [{ vaddr: 0x8000n, firstPage: 8, nrPages: 1, flags: PE_PRESENT }, { vaddr: 0x10000n, firstPage: 16, nrPages: 4, flags: PE_LAZY | PE_PRESENT }] };
    expect(planRanges(pm, [{ start: 0x8000n, end: 0x9000n, prot: 1, flags: MAP_PRIVATE, status: VMA_AREA_REGULAR }, ...two])).toEqual([
      { startAddr: 0x10000n, nPages: 2, firstIndex: 1 },
      { startAddr: 0x12000n, nPages: 2, firstIndex: 3 },
    ]);
    expect(imageInvalid(() => planRanges(pm, [two[1] as MmVma]))).toMatch(/no VMA/);
    expect(imageInvalid(() => planRanges(pm, [{ ...(two[0] as MmVma), end: 0x20000n, status: VMA_AREA_VDSO }]))).toMatch(/does not register/);
  });

  it('rewrites the pagemap for the lazy restore: lazy entries lose their data, present-only entries keep theirs', () => {
    const split = splitLazyPagemap(pagemap);
    expect(split.entries.length).toBe(pagemap.entries.length);
    for (const [i, e] of split.entries.entries()) {
      const orig = pagemap.entries[i]!;
      expect(e.flags).toBe((orig.flags & PE_LAZY) !== 0 ? PE_LAZY : orig.flags);
    }
    const kept = split.presentOnly.reduce((n, r) => n + r.nPages, 0);
    expect(kept).toBe(pagemap.entries.filter((e) => e.flags === PE_PRESENT).reduce((n, e) => n + e.nrPages, 0));
  });

  it('round-trips a hand-encoded mm image and refuses overlapping or unaligned VMAs', () => {
    const v: MmVma[] = [
      { start: 0x1000n, end: 0x3000n, prot: 3, flags: MAP_PRIVATE | MAP_ANONYMOUS, status: VMA_AREA_REGULAR },
      { start: 0x7fff_0000_0000n, end: 0x7fff_0001_0000n, prot: 1, flags: MAP_PRIVATE, status: 0 },
    ];
    expect(decodeMmVmas(encodeMmVmas(v))).toEqual(v);
    expect(imageInvalid(() => decodeMmVmas(encodeMmVmas([v[0]!, { ...v[0]!, start: 0x2000n, end: 0x4000n }])))).toMatch(/overlaps/);
    expect(imageInvalid(() => decodeMmVmas(encodeMmVmas([{ ...v[0]!, end: 0x3001n }])))).toMatch(/page aligned/);
    expect(imageInvalid(() => decodeMmVmas(writeImage(CRIU_MAGIC.MM, [])))).toMatch(/no mm_entry/);
    const vmaWithoutEnd = new WireWriter().uint(1, 0x1000).finish();
    expect(imageInvalid(() => decodeMmVmas(writeImage(CRIU_MAGIC.MM, [new WireWriter().bytes(14, vmaWithoutEnd).finish()])))).toMatch(/without start or end/);
    expect(imageInvalid(() => decodeMmVmas(writeImage(CRIU_MAGIC.PAGEMAP, [Buffer.alloc(0)])))).toMatch(/MM was expected/);
  });
});

const binary = join(repoRoot(), PAGER_BINARY);
const built = canRun('the pager refusing a bad plan', { ok: existsSync(binary), reason: `needs ${binary} (built by npm ci)` });
describe.skipIf(!built)('the pager refuses a bad plan (exit 2, reason in the status, nothing made)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-plan-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const store = join(dir, 'store');
  writeFileSync(store, Buffer.alloc(4 * PS));

  function runPager(plan: Buffer): { code: number | null; status: { state: string; reason: string } } {
    const planFile = join(dir, 'plan');
    writeFileSync(planFile, plan);
    rmSync(join(dir, 'status'), { force: true });
    const r = spawnSync(binary, ['--plan', planFile, '--socket', join(dir, 'lazy.sock'), '--control', join(dir, 'ctl.sock'), '--status', join(dir, 'status'), '--pidfile', join(dir, 'pid')], { timeout: 10_000 });
    expect(existsSync(join(dir, 'lazy.sock'))).toBe(false);
    expect(existsSync(join(dir, 'ctl.sock'))).toBe(false);
    return { code: r.status, status: JSON.parse(readFileSync(join(dir, 'status'), 'utf8')) as { state: string; reason: string } };
  }

  const good = (): Buffer => encodePlan({ files: [store], tasks: [{ nsPid: 1, ranges: [{ startAddr: 0x10000n, nPages: 3, firstIndex: 1 }], pages: pages(4), hashes: hashes(4) }] });

  it.each([
    ['bad magic', (b: Buffer) => b.write('X', 0), /bad magic/],
    ['version', (b: Buffer) => b.writeUInt32LE(2, 8), /version/],
    ['page size', (b: Buffer) => b.writeUInt32LE(65536, 12), /page size/],
    ['too many tasks', (b: Buffer) => b.writeUInt32LE(5000, 20), /tasks/],
    ['reserved', (b: Buffer) => b.writeUInt32LE(1, 24), /reserved/],
  ])('%s', (_name, mutate, reason) => {
    const b = good();
    mutate(b);
    const r = runPager(b);
    expect(r.code).toBe(2);
    expect(r.status.state).toBe('failed');
    expect(r.status.reason).toMatch(reason);
  });

  it('a remote page marked confirmed; a spill file already there (O_EXCL)', () => {
    const remote = encodePlan({ files: [store], tasks: [{ nsPid: 1, ranges: [{ startAddr: 0x10000n, nPages: 3, firstIndex: 1 }], pages: [...pages(3), { file: REMOTE_PAGE, offset: 0, confirmed: false }], hashes: hashes(4) }] });
    const at = remote.length - 4 * 16 - 16 + 4; // the last page record's flags
    remote.writeUInt32LE(1, at);
    expect(runPager(remote).status.reason).toMatch(/remote page marked confirmed/);
    const spill = join(dir, 'replaced.pages');
    writeFileSync(spill, 'not ours');
    try {
      const r = runPager(good());
      expect(r.code).toBe(2);
      expect(r.status.reason).toMatch(/cannot make the spill file .*replaced\.pages: File exists/);
      expect(readFileSync(spill, 'utf8')).toBe('not ours');
    } finally {
      rmSync(spill);
    }
  });

  it('an offset past the end of its file, a file whose size is not a page multiple, trailing bytes, a truncated plan', () => {
    const past = encodePlan({ files: [store], tasks: [{ nsPid: 1, ranges: [], pages: [{ file: 0, offset: 3 * PS + 1, confirmed: true }], hashes: hashes(1) }] });
    expect(runPager(past).status.reason).toMatch(/past the end/);
    const odd = join(dir, 'odd');
    writeFileSync(odd, Buffer.alloc(PS + 1));
    expect(runPager(encodePlan({ files: [odd], tasks: [] })).status.reason).toMatch(/page multiple/);
    expect(runPager(Buffer.concat([good(), Buffer.alloc(8)])).status.reason).toMatch(/after the last task/);
    const g = good();
    expect(runPager(g.subarray(0, g.length - 16)).status.reason).toMatch(/run past the end|truncated/);
    expect(runPager(encodePlan({ files: [join(dir, 'missing')], tasks: [] })).status.reason).toMatch(/No such file/);
  });
});
