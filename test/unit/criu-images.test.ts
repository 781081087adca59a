/** CRIU image codecs on real CRIU 4.2.1 dumps (test/fixtures/criu, see its README) and on crafted input. */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../shared/errors/ferry-error.js';
import { CRIU_MAGIC, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, magicName, readImageOf, readImageRecords, writeImage } from '../../shared/criu/image-file.js';
import {
  checkPagesImageSize,
  decodePagemap,
  encodePagemap,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  presentPageCount,
  presentRanges,
  type Pagemap,
} from '../../shared/criu/pagemap-image.js';
import { WireError, WireReader, WireType, WireWriter } from '../../shared/criu/protobuf-wire.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/criu/', import.meta.url));
const DUMPS = ['single', 'tree', 'threads'] as const;

interface Manifest {
  criu: string;
  files: Record<string, number>;
}

const fixture = (dump: string, name: string): Buffer => readFileSync(`${FIXTURES}${dump}/${name}`);
const manifest = (dump: string): Manifest => JSON.parse(fixture(dump, 'manifest.json').toString('utf8')) as Manifest;
const pagemapNames = (dump: string): string[] => readdirSync(`${FIXTURES}${dump}`).filter((n) => /^pagemap-\d+\.img$/.test(n));

/** Runs `fn` and returns the IMAGE_INVALID error it must throw. */
function imageInvalid(fn: () => unknown): { detail: string } {
  try {
    fn();
  } catch (e) {
    if (isFerryError(e, 'IMAGE_INVALID')) return { detail: e.detail ?? '' };
    throw e;
  }
  throw new Error('expected IMAGE_INVALID, nothing was thrown');
}

describe('image framing on real dumps', () => {
  it.each(DUMPS)('%s: every kept file has the magic its name says', (dump) => {
    const expected: [RegExp, keyof typeof CRIU_MAGIC][] = [
      [/^inventory\.img$/, 'INVENTORY'],
      [/^pstree\.img$/, 'PSTREE'],
      [/^pagemap-\d+\.img$/, 'PAGEMAP'],
      [/^core-\d+\.img$/, 'CORE'],
      [/^stats-(dump|restore)$/, 'STATS'],
    ];
    const names = readdirSync(`${FIXTURES}${dump}`).filter((n) => n !== 'manifest.json');
    expect(names.length).toBeGreaterThan(4);
    for (const name of names) {
      const want = expected.find(([re]) => re.test(name))?.[1];
      expect(want, name).toBeDefined();
      const buf = fixture(dump, name);
      const { magic, records } = readImageRecords(buf, name);
      expect(magicName(magic), name).toBe(want);
      expect(records.length, name).toBeGreaterThan(0);
      // The header CRIU chose: none for the inventory, the service magic for stats, the common magic otherwise.
      const head = buf.readUInt32LE(0);
      if (want === 'INVENTORY') expect(head).toBe(CRIU_MAGIC.INVENTORY);
      else expect(head).toBe(want === 'STATS' ? IMG_SERVICE_MAGIC : IMG_COMMON_MAGIC);
      // Framing round trip: byte for byte.
      expect(writeImage(magic, records).equals(buf), name).toBe(true);
    }
  });

  it('were captured with CRIU 4.2.1', () => {
    for (const dump of DUMPS) expect(manifest(dump).criu).toBe('4.2.1');
  });
});

describe('pagemap on real dumps', () => {
  const cases = DUMPS.flatMap((dump) => pagemapNames(dump).map((name) => [dump, name] as const));

  it.each(cases)('%s/%s: ascending, page aligned, flags PRESENT or LAZY|PRESENT', (dump, name) => {
    const pm = decodePagemap(fixture(dump, name), name);
    expect(pm.entries.length).toBeGreaterThan(5);
    let end = 0n;
    for (const e of pm.entries) {
      expect(e.vaddr >= end, `0x${e.vaddr.toString(16)} overlaps or goes back`).toBe(true);
      expect(e.vaddr % 4096n).toBe(0n);
      expect(e.firstPage).toBe(Number(e.vaddr / 4096n));
      expect(e.nrPages).toBeGreaterThan(0);
      expect([PE_PRESENT, PE_LAZY | PE_PRESENT]).toContain(e.flags);
      end = e.vaddr + BigInt(e.nrPages) * 4096n;
    }
    // The workload's anonymous memory comes out as LAZY|PRESENT even without --lazy-pages.
    expect(pm.entries.some((e) => e.flags === (PE_LAZY | PE_PRESENT))).toBe(true);
  });

  it.each(cases)('%s/%s: PRESENT pages x 4096 = the recorded size of pages-<pagesId>.img', (dump, name) => {
    const pm = decodePagemap(fixture(dump, name), name);
    const size = manifest(dump).files[`pages-${pm.pagesId}.img`];
    expect(size).toBeDefined();
    expect(presentPageCount(pm) * 4096).toBe(size);
    expect(() => checkPagesImageSize(pm, size!)).not.toThrow();
    expect(() => checkPagesImageSize(pm, BigInt(size!))).not.toThrow();
    // A pages image one page short is what makes `criu restore` spin for ever: it must be caught here.
    expect(imageInvalid(() => checkPagesImageSize(pm, size! - 4096)).detail).toMatch(/present pages/);
    expect(imageInvalid(() => checkPagesImageSize(pm, size! + 4096)).detail).toMatch(/pages-\d+\.img/);
  });

  it.each(cases)('%s/%s: re-encodes byte for byte as CRIU 4.2.1 wrote it', (dump, name) => {
    const buf = fixture(dump, name);
    expect(encodePagemap(decodePagemap(buf)).equals(buf)).toBe(true);
  });

  it('pages ids of the tree are 1, 2, 3 and match the manifest', () => {
    const ids = pagemapNames('tree').map((n) => decodePagemap(fixture('tree', n)).pagesId);
    expect(ids.sort()).toEqual([1, 2, 3]);
  });

  it('presentRanges gives each PRESENT range its offset in the pages image, in pagemap order', () => {
    const pm = decodePagemap(fixture('single', 'pagemap-1.img'));
    const ranges = [...presentRanges(pm)];
    let offset = 0;
    for (const r of ranges) {
      expect(r.offset).toBe(offset);
      offset += r.nrPages * 4096;
    }
    expect(offset).toBe(manifest('single').files['pages-1.img']);
  });
});

describe('pagemap encode/decode', () => {
  const HIGH = 0xffff_ffff_ffff_e000n; // above 2^53: must stay exact as a bigint
  const pm: Pagemap = {
    pagesId: 7,
    entries: [
      { vaddr: 0x1000n, firstPage: 1, nrPages: 3, flags: PE_PRESENT },
      { vaddr: 0x7fff_0000_0000n, firstPage: 0x7fff_0000_0000 / 4096, nrPages: 256, flags: PE_LAZY | PE_PRESENT },
      { vaddr: 0x7fff_1000_0000n, firstPage: 0x7fff_1000_0000 / 4096, nrPages: 2, flags: PE_PARENT },
      { vaddr: HIGH, firstPage: Number(HIGH / 4096n), nrPages: 2, flags: PE_PRESENT },
    ],
  };

  it('round trips, including a vaddr above 2^53', () => {
    const back = decodePagemap(encodePagemap(pm));
    expect(back).toEqual(pm);
    expect(typeof back.entries[3]!.vaddr).toBe('bigint');
    expect(back.entries[3]!.vaddr).toBe(HIGH);
    expect(presentPageCount(back)).toBe(3 + 256 + 2);
  });

  it('round trips the legacy count field (CRIU < 4.2 reads only field 2)', () => {
    const legacy = encodePagemap(pm, { legacyNrPages: true });
    expect(decodePagemap(legacy)).toEqual(pm);
    expect(legacy.length).toBeLessThan(encodePagemap(pm).length);
  });

  it('derives flags for entries written before field 4 existed, as CRIU does', () => {
    const entry = (vaddr: bigint, inParent: boolean | undefined): Buffer => {
      const w = new WireWriter().uint(1, vaddr).uint(2, 5);
      if (inParent !== undefined) w.bool(3, inParent);
      return w.finish();
    };
    const head = new WireWriter().uint(1, 1).finish();
    const old = decodePagemap(writeImage(CRIU_MAGIC.PAGEMAP, [head, entry(0x4000n, true), entry(0x10000n, false), entry(0x20000n, undefined)]));
    expect(old.entries.map((e) => e.flags)).toEqual([PE_PARENT, PE_PRESENT, PE_PRESENT]);
    expect(old.entries.map((e) => e.nrPages)).toEqual([5, 5, 5]);
  });

  it('prefers nr_pages (field 5) over compat_nr_pages (field 2)', () => {
    const head = new WireWriter().uint(1, 1).finish();
    const e = new WireWriter().uint(1, 0x4000n).uint(2, 1).uint(4, PE_PRESENT).uint(5, 9).finish();
    expect(decodePagemap(writeImage(CRIU_MAGIC.PAGEMAP, [head, e])).entries[0]!.nrPages).toBe(9);
  });

  it('refuses entries that are not page aligned, empty, or run past 2^64', () => {
    const head = new WireWriter().uint(1, 1).finish();
    const bad = (w: WireWriter): { detail: string } => imageInvalid(() => decodePagemap(writeImage(CRIU_MAGIC.PAGEMAP, [head, w.finish()]), 'pagemap-9.img'));
    expect(bad(new WireWriter().uint(1, 0x4001n).uint(4, 4).uint(5, 1)).detail).toMatch(/not page aligned/);
    expect(bad(new WireWriter().uint(1, 0x4000n).uint(4, 4).uint(5, 0)).detail).toMatch(/0 pages/);
    expect(bad(new WireWriter().uint(1, 0xffff_ffff_ffff_f000n).uint(4, 4).uint(5, 2)).detail).toMatch(/64-bit/);
    expect(bad(new WireWriter().uint(2, 1).uint(4, 4)).detail).toMatch(/without vaddr/);
    expect(bad(new WireWriter().uint(1, 0x4000n).uint(4, 4)).detail).toMatch(/without nr_pages/);
    expect(bad(new WireWriter().uint(1, 0x4000n).uint(4, 4)).detail).toMatch(/^pagemap-9\.img entry 0/);
  });
});

describe('the pagemap decoder is strict (issue 9: overlapping, descending entries and unknown flags were accepted)', () => {
  const head = new WireWriter().uint(1, 1).finish();
  const entry = (page: number, nrPages: number, flags: number): Buffer => new WireWriter().uint(1, BigInt(page) * 4096n).uint(2, 0).uint(4, flags).uint(5, nrPages).finish();
  const image = (...entries: Buffer[]): Buffer => writeImage(CRIU_MAGIC.PAGEMAP, [head, ...entries]);
  const refused = (buf: Buffer): string => imageInvalid(() => decodePagemap(buf, 'pagemap-1.img')).detail;

  it('refuses an entry that overlaps the one before it', () => {
    expect(refused(image(entry(10, 4, PE_PRESENT), entry(13, 2, PE_PRESENT)))).toMatch(/^pagemap-1\.img entry 1: entry at 0xd000 overlaps or precedes the entry before it, which ends at 0xe000$/);
    // The same page twice is an overlap too.
    expect(refused(image(entry(10, 1, PE_PRESENT), entry(10, 1, PE_LAZY)))).toMatch(/entry 1: .* overlaps/);
  });

  it('refuses descending entries', () => {
    expect(refused(image(entry(20, 1, PE_PRESENT), entry(10, 1, PE_PRESENT)))).toMatch(/entry 1: entry at 0xa000 overlaps or precedes/);
  });

  it('accepts adjacent entries (CRIU splits runs where the flags change)', () => {
    const pm = decodePagemap(image(entry(10, 4, PE_PRESENT), entry(14, 2, PE_LAZY | PE_PRESENT), entry(16, 1, PE_LAZY)));
    expect(pm.entries.map((e) => [e.firstPage, e.nrPages, e.flags])).toEqual([[10, 4, PE_PRESENT], [14, 2, PE_LAZY | PE_PRESENT], [16, 1, PE_LAZY]]);
  });

  it.each([
    [0, 'no flag at all'],
    [8, 'an unknown bit'],
    [PE_PRESENT | 0x100, 'a known flag with an unknown bit'],
    [0x8000_0000, 'the top bit'],
    [PE_PARENT | PE_PRESENT, 'PARENT with PRESENT: where is the data?'],
    [PE_PARENT | PE_LAZY, 'PARENT with LAZY'],
    [PE_PARENT | PE_LAZY | PE_PRESENT, 'all three'],
  ])('refuses flags 0x%s (%s)', (flags) => {
    expect(refused(image(entry(10, 1, flags)))).toMatch(/entry 0: entry at 0xa000 has flags 0x[0-9a-f]+; CRIU writes PRESENT, LAZY, LAZY\|PRESENT or PARENT/);
  });

  it('refuses in_parent (old images) together with a PRESENT flag', () => {
    const both = new WireWriter().uint(1, 0x4000n).uint(2, 1).bool(3, true).uint(4, PE_PRESENT).finish();
    expect(refused(image(both))).toMatch(/has flags 0x5/);
  });

  it('stops at the first bad record: a huge image of empty records is refused at its first entry', () => {
    // 4 MiB of zero-length records: split eagerly this was a million buffer views before any check.
    const empties = Buffer.alloc(4 * 1024 * 1024);
    const buf = Buffer.concat([image(entry(1, 1, PE_PRESENT)), empties]);
    const t0 = performance.now();
    expect(refused(buf)).toMatch(/^pagemap-1\.img entry 1: entry without vaddr$/);
    expect(performance.now() - t0).toBeLessThan(500);
  });
});

describe('broken images give IMAGE_INVALID with a clear detail', () => {
  const real = fixture('single', 'pagemap-1.img');

  it('a record cut short', () => {
    const { detail } = imageInvalid(() => decodePagemap(real.subarray(0, real.length - 3), 'pagemap-1.img'));
    expect(detail).toMatch(/^pagemap-1\.img: truncated record 15 at offset \d+: length (\d+), only \d+ bytes left$/);
  });

  it('a length prefix cut short', () => {
    const { detail } = imageInvalid(() => readImageRecords(Buffer.concat([real, Buffer.from([1, 0])]), 'pagemap-1.img'));
    expect(detail).toMatch(/truncated record length at offset \d+ \(record 16\): 2 of 4 bytes/);
  });

  it('a header cut short, and an empty file', () => {
    expect(imageInvalid(() => readImageRecords(real.subarray(0, 6), 'x.img')).detail).toMatch(/header ends after the first magic/);
    expect(imageInvalid(() => readImageRecords(Buffer.alloc(0), 'x.img')).detail).toMatch(/too short/);
  });

  it('garbage', () => {
    const junk = Buffer.from('this is not a CRIU image at all');
    expect(imageInvalid(() => decodePagemap(junk, 'pagemap-1.img')).detail).toMatch(/unknown header magic 0x73696874/);
  });

  it('the wrong image', () => {
    expect(imageInvalid(() => decodePagemap(fixture('single', 'pstree.img'))).detail).toMatch(/magic PSTREE where PAGEMAP was expected/);
    expect(imageInvalid(() => readImageOf(real, 'PSTREE', 'pstree.img')).detail).toMatch(/magic PAGEMAP where PSTREE was expected/);
  });

  it('a known magic behind the wrong header', () => {
    const statsUnderCommon = Buffer.from(fixture('single', 'stats-dump'));
    statsUnderCommon.writeUInt32LE(IMG_COMMON_MAGIC, 0);
    expect(imageInvalid(() => readImageRecords(statsUnderCommon, 'stats-dump')).detail).toMatch(/STATS image behind the wrong header/);
  });

  it('a garbled message inside an intact record', () => {
    const garbled = Buffer.from(real);
    // First entry's record: [len u32][0x08 vaddr varint ...]; make every vaddr byte a continuation byte.
    const entryAt = 8 + 4 + 2 + 4;
    garbled.fill(0xff, entryAt + 1, entryAt + 1 + 11);
    const { detail } = imageInvalid(() => decodePagemap(garbled, 'pagemap-1.img'));
    expect(detail).toMatch(/^pagemap-1\.img: /);
    expect(detail).toMatch(/varint/);
  });

  it('pagemap without a head', () => {
    expect(imageInvalid(() => decodePagemap(writeImage(CRIU_MAGIC.PAGEMAP, []))).detail).toMatch(/no pagemap head/);
  });
});

describe('protobuf wire', () => {
  const varintOf = (bytes: number[]): number | bigint => new WireReader(Uint8Array.from(bytes)).varint();
  const encoded = (v: number | bigint): Buffer => new WireWriter().uint(1, v).finish().subarray(1);

  it('varints: numbers below 2^53, bigints from 2^53 on', () => {
    expect(varintOf([0])).toBe(0);
    expect(varintOf([0x7f])).toBe(127);
    expect(varintOf([0x80, 0x01])).toBe(128);
    expect(varintOf([0xff, 0xff, 0xff, 0xff, 0x0f])).toBe(0xffff_ffff);
    const maxSafe = Number.MAX_SAFE_INTEGER;
    expect(varintOf([...encoded(maxSafe)])).toBe(maxSafe);
    expect(varintOf([...encoded(2n ** 53n)])).toBe(2n ** 53n);
    expect(varintOf([...encoded(2n ** 64n - 1n)])).toBe(2n ** 64n - 1n);
    expect(encoded(2n ** 64n - 1n).length).toBe(10);
    // A bigint that is small still decodes as a number.
    expect(varintOf([...encoded(300n)])).toBe(300);
  });

  it('round trips a spread of values through writer and reader', () => {
    for (const v of [1, 127, 128, 16383, 16384, 2 ** 31, 2 ** 32, 2 ** 49 - 1, 2 ** 49, 2 ** 52 + 1]) {
      expect(varintOf([...encoded(v)])).toBe(v);
    }
    for (const v of [2n ** 53n + 1n, 0x7fff_ffff_ffff_f000n, 0xffff_ffff_ffff_f000n]) {
      const r = new WireReader(new WireWriter().uint(3, v).finish());
      expect(r.tag()).toEqual({ field: 3, wireType: WireType.VARINT });
      expect(r.uint64Big(WireType.VARINT)).toBe(v);
    }
  });

  it('refuses broken varints', () => {
    expect(() => varintOf([0x80, 0x80])).toThrow(/truncated varint at offset 0/);
    expect(() => varintOf([...Array<number>(10).fill(0xff), 0x01])).toThrow(/longer than 10 bytes/);
    expect(() => varintOf([...Array<number>(9).fill(0xff), 0x02])).toThrow(/above 2\^64/);
    expect(() => varintOf([])).toThrow(WireError);
  });

  it('checks types and ranges of fields', () => {
    const big = new WireReader(new WireWriter().uint(1, 2n ** 60n).finish());
    const t = big.tag();
    expect(() => big.uint64(t.wireType)).toThrow(/too large for a count/);
    const wide = new WireReader(new WireWriter().uint(1, 2 ** 32).finish());
    expect(() => wide.uint32(wide.tag().wireType)).toThrow(/exceeds uint32/);
    const len = new WireReader(new WireWriter().bytes(1, Uint8Array.from([1])).finish());
    expect(() => len.uint32(len.tag().wireType)).toThrow(/wire type 2 where 0 was expected/);
  });

  it('length-delimited fields: views of the right bytes, refused when they run past the end', () => {
    const msg = new WireWriter().bytes(2, Buffer.from('hello')).uint(3, 1).finish();
    const r = new WireReader(msg);
    expect(r.tag()).toEqual({ field: 2, wireType: WireType.LEN });
    expect(Buffer.from(r.bytes(WireType.LEN)).toString()).toBe('hello');
    expect(() => {
      const cut = new WireReader(msg.subarray(0, 4));
      cut.bytes(cut.tag().wireType);
    }).toThrow(/runs past the end/);
  });

  it('skips fixed32, fixed64 and unknown fields; refuses groups and field 0', () => {
    const msg = Buffer.from([
      (1 << 3) | 5, 1, 2, 3, 4, // fixed32
      (2 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8, // fixed64
      (3 << 3) | 2, 2, 9, 9, // bytes
      (4 << 3) | 0, 42, // varint
    ]);
    const r = new WireReader(msg);
    const seen: number[] = [];
    while (!r.done) {
      const t = r.tag();
      if (t.field === 4) seen.push(r.uint32(t.wireType));
      else r.skip(t.wireType);
    }
    expect(seen).toEqual([42]);
    const short = new WireReader(Buffer.from([(1 << 3) | 5, 1, 2]));
    expect(() => short.skip(short.tag().wireType)).toThrow(/runs past the end/);
    expect(() => new WireReader(Buffer.from([(1 << 3) | 3])).tag()).toThrow(/wire type 3/);
    expect(() => new WireReader(Buffer.from([0])).tag()).toThrow(/field number 0/);
  });

  it('the writer refuses what cannot be an unsigned varint', () => {
    expect(() => new WireWriter().uint(1, -1)).toThrow(WireError);
    expect(() => new WireWriter().uint(1, 1.5)).toThrow(WireError);
    expect(() => new WireWriter().uint(1, 2 ** 53)).toThrow(WireError);
    expect(() => new WireWriter().uint(1, 2n ** 64n)).toThrow(WireError);
    expect(() => new WireWriter().uint(0, 1)).toThrow(/invalid field number/);
  });

  it('readImageOf names the expected image in errors', () => {
    expect(imageInvalid(() => readImageOf(fixture('single', 'inventory.img'), 'PSTREE', 'pstree.img')).detail).toBe('pstree.img: magic INVENTORY where PSTREE was expected');
  });
});
