import { describe, expect, it } from 'vitest';
import { appendRun, decodePagemapEntries, emptyRuns, runsPageCount } from '../../shared/kernel/pagemap.js';
import {
  dumpableVmas,
  isAnonymous,
  isPrivateWritable,
  pageAddressHi,
  pageAddressLo,
  pageOfAddress,
  parseMaps,
  parseMapsLine,
} from '../../shared/kernel/proc-maps.js';
import { PF_KTHREAD, parseStat, parseStatus, statIsKernelThread, statusIsPidNamespaceRoot } from '../../shared/kernel/proc-status.js';

const MAPS = [
  '55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1312345                    /usr/bin/cat',
  '55d0c8a02000-55d0c8a07000 r-xp 00002000 fd:01 1312345                    /usr/bin/cat',
  '55d0c8a0b000-55d0c8a0c000 rw-p 0000a000 fd:01 1312345                    /usr/bin/cat',
  '55d0ca3c5000-55d0ca3e6000 rw-p 00000000 00:00 0                          [heap]',
  '7f1c2c000000-7f1c2c021000 rw-p 00000000 00:00 0 ',
  '7f1c2c021000-7f1c30000000 ---p 00000000 00:00 0',
  '7f1c30400000-7f1c30600000 rw-s 00000000 00:01 4096                       /dev/zero (deleted)',
  '7f1c30600000-7f1c30602000 rw-p 00000000 00:00 0                          [anon:ferry buffer]',
  '7f1c30700000-7f1c30701000 r--p 00001000 fd:01 99                         /opt/my app/lib data.so',
  '7ffd6a1b0000-7ffd6a1d1000 rw-p 00000000 00:00 0                          [stack]',
  '7ffd6a1f0000-7ffd6a1f4000 r--p 00000000 00:00 0                          [vvar]',
  '7ffd6a1f4000-7ffd6a1f6000 r--p 00000000 00:00 0                          [vvar_vclock]',
  '7ffd6a1f6000-7ffd6a1f8000 r-xp 00000000 00:00 0                          [vdso]',
  'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
  '',
].join('\n');

describe('parseMaps', () => {
  const vmas = parseMaps(MAPS);

  it('parses every mapping with page numbers, perms, offset, device, inode and path', () => {
    expect(vmas).toHaveLength(14);
    expect(vmas[0]).toEqual({
      startPage: 0x55d0c8a00,
      endPage: 0x55d0c8a02,
      perms: 'r--p',
      offset: 0,
      dev: 'fd:01',
      inode: 1312345,
      path: '/usr/bin/cat',
    });
    expect(vmas[2]?.offset).toBe(0xa000);
    expect(vmas[3]?.path).toBe('[heap]');
    expect(vmas[4]?.path).toBe('');
    expect(vmas[5]?.path).toBe('');
    expect(vmas[6]?.path).toBe('/dev/zero (deleted)');
    expect(vmas[7]?.path).toBe('[anon:ferry buffer]');
    expect(vmas[8]?.path).toBe('/opt/my app/lib data.so');
  });

  it('keeps page numbers exact above 2^53 bytes (vsyscall, 57-bit addresses)', () => {
    expect(vmas[13]?.startPage).toBe(0xffffffffff600);
    expect(vmas[13]?.endPage).toBe(0xffffffffff601);
    const high = parseMapsLine('1fffffffffffe000-1ffffffffffff000 rw-p 00000000 00:00 0');
    expect(high?.startPage).toBe(0x1fffffffffffe);
    expect(high?.endPage).toBe(0x1ffffffffffff);
  });

  it('skips lines that are not mappings', () => {
    expect(parseMapsLine('garbage')).toBeUndefined();
    expect(parseMaps('\n\nnot a map\n')).toEqual([]);
  });

  it('classifies areas', () => {
    expect(vmas.filter(isPrivateWritable).map((v) => v.path)).toEqual(['/usr/bin/cat', '[heap]', '', '[anon:ferry buffer]', '[stack]']);
    expect(isAnonymous(vmas[3]!)).toBe(true);
    expect(isAnonymous(vmas[0]!)).toBe(false);
  });

  it('selects the private areas CRIU dumps (PROT_NONE ones too), without the kernel-provided ones', () => {
    const picked = dumpableVmas(vmas).map((v) => `${v.perms} ${v.path}`);
    expect(picked).toEqual([
      'r--p /usr/bin/cat',
      'r-xp /usr/bin/cat',
      'rw-p /usr/bin/cat',
      'rw-p [heap]',
      'rw-p ',
      '---p ',
      'rw-p [anon:ferry buffer]',
      'r--p /opt/my app/lib data.so',
      'rw-p [stack]',
    ]);
  });

  it('splits page addresses into 32-bit words without losing bits', () => {
    for (const page of [0, 1, 0xfffff, 0x100000, 0x7fffffffff, 0x1ffffffffffff]) {
      const lo = pageAddressLo(page);
      const hi = pageAddressHi(page);
      expect(lo).toBeLessThan(2 ** 32);
      expect(BigInt(hi) * 2n ** 32n + BigInt(lo)).toBe(BigInt(page) * 4096n);
      expect(pageOfAddress(lo, hi)).toBe(page);
    }
  });
});

const STATUS_NESTED = [
  'Name:\tworker\\nname',
  'Umask:\t0022',
  'State:\tS (sleeping)',
  'Tgid:\t48213',
  'Ngid:\t0',
  'Pid:\t48213',
  'PPid:\t48200',
  'TracerPid:\t0',
  'Uid:\t0\t0\t0\t0',
  'FDSize:\t64',
  'NStgid:\t48213\t3',
  'NSpid:\t48213\t3',
  'NSpgid:\t48201\t1',
  'NSsid:\t48201\t1',
  'Kthread:\t0',
  'VmPeak:\t    2680 kB',
  'Threads:\t4',
  '',
].join('\n');

const STATUS_KTHREAD = [
  'Name:\tkthreadd',
  'Umask:\t0000',
  'State:\tS (sleeping)',
  'Tgid:\t2',
  'Ngid:\t0',
  'Pid:\t2',
  'PPid:\t0',
  'NStgid:\t2',
  'NSpid:\t2',
  'NSpgid:\t0',
  'NSsid:\t0',
  'Kthread:\t1',
  'Threads:\t1',
  '',
].join('\n');

describe('parseStatus', () => {
  it('reads identity, state and the pid-namespace view', () => {
    const s = parseStatus(STATUS_NESTED);
    expect(s).toEqual({
      name: 'worker\nname',
      state: 'S',
      tgid: 48213,
      pid: 48213,
      ppid: 48200,
      nsTgids: [48213, 3],
      nsPids: [48213, 3],
      nsPgids: [48201, 1],
      nsSids: [48201, 1],
      threads: 4,
      kthread: false,
    });
    expect(statusIsPidNamespaceRoot(s)).toBe(false);
  });

  it('recognises a kernel thread and a namespace init', () => {
    const k = parseStatus(STATUS_KTHREAD);
    expect(k.kthread).toBe(true);
    expect(k.nsPgids).toEqual([0]);
    expect(statusIsPidNamespaceRoot(k)).toBe(false);
    const init = parseStatus(STATUS_NESTED.replace('NSpid:\t48213\t3', 'NSpid:\t48213\t1'));
    expect(statusIsPidNamespaceRoot(init)).toBe(true);
    // Pid 1 of the host is not a namespace root: it has no outer namespace.
    expect(statusIsPidNamespaceRoot(parseStatus(STATUS_KTHREAD.replace('NSpid:\t2', 'NSpid:\t1')))).toBe(false);
  });

  it('copes with kernels that print neither Kthread nor NS lines', () => {
    const old = STATUS_NESTED.split('\n')
      .filter((l) => !l.startsWith('NS') && !l.startsWith('Kthread'))
      .join('\n');
    const s = parseStatus(old);
    expect(s.kthread).toBeUndefined();
    expect(s.nsPids).toEqual([48213]);
    expect(s.nsTgids).toEqual([48213]);
  });

  it('throws on text that is not a status file', () => {
    expect(() => parseStatus('hello')).toThrow(/malformed status/);
  });
});

describe('parseStat', () => {
  // comm "my ) (proc x": spaces and both parentheses; only the last ')' ends it.
  const STAT =
    '4242 (my ) (proc x) R 4200 4242 4100 34816 4242 4194560 120 0 0 0 3 1 0 0 20 0 1 0 987654 2633728 224 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n';

  it('splits after the last parenthesis', () => {
    const s = parseStat(STAT);
    expect(s).toEqual({
      pid: 4242,
      comm: 'my ) (proc x',
      state: 'R',
      ppid: 4200,
      pgrp: 4242,
      session: 4100,
      ttyNr: 34816,
      tpgid: 4242,
      flags: 4194560,
      startTime: 987654,
    });
    expect(statIsKernelThread(s)).toBe(false);
  });

  it('sees PF_KTHREAD, also with the flags word above 2^31', () => {
    const flags = (0x80000000 + PF_KTHREAD + 0x40).toString();
    const s = parseStat(`2 (kthreadd) S 0 0 0 0 -1 ${flags} 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615`);
    expect(statIsKernelThread(s)).toBe(true);
    expect(s.comm).toBe('kthreadd');
  });

  it('throws on truncated text', () => {
    expect(() => parseStat('1 (init) S 0')).toThrow(/malformed stat/);
  });
});

/** Builds pagemap entries from (hi word) values; the low word holds a fake pfn that must be ignored. */
function pagemapBuffer(his: number[], byteOffset = 0): Buffer {
  const buf = Buffer.alloc(byteOffset + his.length * 8);
  his.forEach((hi, i) => {
    buf.writeUInt32LE(0xdeadbeef, byteOffset + i * 8);
    buf.writeUInt32LE(hi >>> 0, byteOffset + i * 8 + 4);
  });
  return buf.subarray(byteOffset);
}

const PRESENT = 0x80000000; // bit 63
const SWAP = 0x40000000; // bit 62
const FILE = 0x20000000; // bit 61
const GUARD = 0x04000000; // bit 58
const SOFT_DIRTY = 0x00800000; // bit 55
const EXCLUSIVE = 0x01000000; // bit 56

describe('decodePagemapEntries', () => {
  const entries = [
    PRESENT | EXCLUSIVE, // 0: counts
    PRESENT | SOFT_DIRTY, // 1: counts
    0, // 2: not present
    SWAP, // 3: swapped counts
    PRESENT, // 4
    PRESENT | FILE, // 5: page-cache page, not dumped
    SWAP | GUARD, // 6: guard marker, not dumped
    SWAP | FILE, // 7: swapped shmem page, not dumped
    PRESENT, // 8
    PRESENT, // 9 (last: run reaches the end of the buffer)
  ];

  it('turns entries into merged runs of dumpable pages', () => {
    const out = emptyRuns();
    decodePagemapEntries(pagemapBuffer(entries), 1000, out);
    expect(out).toEqual({ starts: [1000, 1003, 1008], counts: [2, 2, 2] });
    expect(runsPageCount(out)).toBe(6);
  });

  it('merges a run that continues in the next block', () => {
    const out = emptyRuns();
    decodePagemapEntries(pagemapBuffer(entries), 1000, out);
    decodePagemapEntries(pagemapBuffer([PRESENT, PRESENT, 0, PRESENT]), 1010, out);
    expect(out).toEqual({ starts: [1000, 1003, 1008, 1013], counts: [2, 2, 4, 1] });
  });

  it('decodes a buffer that is not 4-byte aligned', () => {
    const out = emptyRuns();
    const buf = pagemapBuffer(entries, 3);
    expect(buf.byteOffset % 4).not.toBe(0);
    decodePagemapEntries(buf, 0x7ffd6a1b0, out);
    expect(out.starts).toEqual([0x7ffd6a1b0, 0x7ffd6a1b3, 0x7ffd6a1b8]);
  });

  it('leaves out the zero page (when its pfn is known) and uffd-wp pte markers (swap type 31)', () => {
    const UFFD_WP = 0x02000000; // bit 57
    const buf = Buffer.alloc(5 * 8);
    const put = (i: number, lo: number, hi: number): void => {
      buf.writeUInt32LE(lo, i * 8);
      buf.writeUInt32LE(hi >>> 0, i * 8 + 4);
    };
    put(0, 0x3b34, PRESENT | UFFD_WP); // the zero page (pfn 0x3b34 here)
    put(1, 0x3f, SWAP | UFFD_WP); // a uffd-wp marker: type 31, offset 1
    put(2, 0x1234, PRESENT | EXCLUSIVE | 0x1); // pfn 0x1_00001234: data
    put(3, 0x40, SWAP | UFFD_WP); // a real swapped page, write-protected: type 0, offset 2
    put(4, 0x3b34, PRESENT | 0x1); // pfn 0x1_00003b34: not the zero page
    const out = emptyRuns();
    decodePagemapEntries(buf, 100, out, 0x3b34);
    expect(out).toEqual({ starts: [102], counts: [3] });
    const unknown = emptyRuns();
    decodePagemapEntries(buf, 100, unknown); // pfns hidden: the zero page counts
    expect(unknown).toEqual({ starts: [100, 102], counts: [1, 3] });
  });

  it('appendRun merges touching runs and ignores empty ones', () => {
    const r = emptyRuns();
    appendRun(r, 10, 2);
    appendRun(r, 12, 3);
    appendRun(r, 20, 0);
    appendRun(r, 16, 1);
    expect(r).toEqual({ starts: [10, 16], counts: [5, 1] });
  });
});
