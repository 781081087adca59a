/**
 * PROT_NONE memory against a live task (issue 13, maps04): a C program writes a pattern into a region and then
 * mprotects its middle PROT_NONE. process_vm_readv refuses those pages; ProcessMemoryReader reads them through
 * /proc/PID/mem, in chunks that mix both paths; a page neither can read (unmapped) stays in `unreadable`, and
 * the message about it names its address in hex.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { describePageAddresses, ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { readMaps } from '../../shared/kernel/proc-maps.js';
import { IOVEC_BYTES, addressOf, processVmReadv } from '../../shared/native/libc.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';

const PAGES = 64;
/** Region pages [NONE_FROM, NONE_TO) are PROT_NONE after the fill; the rest stay read-write. */
const NONE_FROM = 16;
const NONE_TO = 48;
/** Unmapped by the "u" command: inside the PROT_NONE part. */
const GONE = [30, 34] as const;

const TARGET_C = `
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  long pages = atol(argv[1]), none0 = atol(argv[2]), none1 = atol(argv[3]), gone0 = atol(argv[4]), gone1 = atol(argv[5]);
  long ps = 4096;
  uint8_t *r = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) return 1;
  for (long p = 0; p < pages; p++)
    for (uint32_t j = 0; j < 1024; j++) ((uint32_t *)(r + p * ps))[j] = (uint32_t)(p * 1024 + j) * 0x9e3779b1u;
  if (mprotect(r + none0 * ps, (none1 - none0) * ps, PROT_NONE) != 0) return 2;
  printf("ready %lx\\n", (unsigned long)r);
  fflush(stdout);
  char cmd[16];
  while (fgets(cmd, sizeof cmd, stdin)) {
    if (cmd[0] != 'u') break;
    munmap(r + gone0 * ps, (gone1 - gone0) * ps);
    printf("ok\\n");
    fflush(stdout);
  }
  return 0;
}
`;

function expectedPage(p: number): Buffer {
  const buf = Buffer.alloc(PAGE_SIZE);
  for (let j = 0; j < PAGE_SIZE / 4; j++) buf.writeUInt32LE(Math.imul(p * 1024 + j, 0x9e3779b1) >>> 0, j * 4);
  return buf;
}

/** Page -> bytes of every page read, plus the unreadable ones, over `count` pages from `first`. */
function readAll(reader: ProcessMemoryReader, pid: number, first: number, count: number): { read: Map<number, Buffer>; unreadable: number[] } {
  const read = new Map<number, Buffer>();
  const unreadable: number[] = [];
  for (const c of reader.chunks(pid, { starts: [first], counts: [count] })) {
    c.pages.forEach((p, i) => read.set(p, Buffer.from(c.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE))));
    unreadable.push(...c.unreadable);
  }
  return { read, unreadable };
}

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe.skipIf(!canRun('PROT_NONE memory against a live task', hasCommand('cc')))('PROT_NONE memory against a live task', () => {
  let dir: string;
  let child: ChildProcess;
  let lines: Interface;
  let base: number; // page number of region page 0
  const nextLine = (): Promise<string> => new Promise((resolve) => lines.once('line', resolve));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-protnone-'));
    writeFileSync(join(dir, 'target.c'), TARGET_C);
    execFileSync('cc', ['-O2', '-o', join(dir, 'target'), join(dir, 'target.c')]);
    child = spawn(join(dir, 'target'), [PAGES, NONE_FROM, NONE_TO, ...GONE].map(String), { stdio: ['pipe', 'pipe', 'inherit'] });
    lines = createInterface({ input: child.stdout! });
    const m = /^ready ([0-9a-f]+)$/.exec(await nextLine());
    expect(m).not.toBeNull();
    base = Number(BigInt(`0x${m![1]}`) / BigInt(PAGE_SIZE));
  });

  afterAll(() => {
    child?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('has a PROT_NONE area that process_vm_readv refuses (EFAULT)', () => {
    const none = readMaps(child.pid!)!.find((v) => v.startPage === base + NONE_FROM);
    expect(none?.perms).toBe('---p');
    const local = Buffer.alloc(IOVEC_BYTES);
    const remote = Buffer.alloc(IOVEC_BYTES);
    const page = Buffer.alloc(PAGE_SIZE);
    const a = addressOf(page);
    local.writeUInt32LE(a.lo, 0);
    local.writeUInt32LE(a.hi, 4);
    local.writeUInt32LE(PAGE_SIZE, 8);
    remote.writeBigUInt64LE(BigInt(base + NONE_FROM) * BigInt(PAGE_SIZE), 0);
    remote.writeUInt32LE(PAGE_SIZE, 8);
    expect(() => processVmReadv(child.pid!, local, 1, remote, 1)).toThrow(expect.objectContaining({ errnoName: 'EFAULT' }) as SystemCallError);
    // The readable part before it is read by process_vm_readv alone.
    remote.writeBigUInt64LE(BigInt(base) * BigInt(PAGE_SIZE), 0);
    expect(processVmReadv(child.pid!, local, 1, remote, 1)).toBe(PAGE_SIZE);
    expect(page).toEqual(expectedPage(0));
  });

  it.each([256, 5])('reads every page, PROT_NONE ones through /proc/PID/mem, in chunks of %i pages', (chunkPages) => {
    const reader = new ProcessMemoryReader({ chunkPages });
    const fds = openFds();
    const { read, unreadable } = readAll(reader, child.pid!, base, PAGES);
    expect(unreadable).toEqual([]);
    expect([...read.keys()]).toEqual(Array.from({ length: PAGES }, (_, i) => base + i));
    for (let p = 0; p < PAGES; p++) expect(read.get(base + p)!.equals(expectedPage(p)), `page ${p}`).toBe(true);
    expect(openFds()).toBe(fds); // the walk's /proc/PID/mem is closed at its end
  });

  it('closes /proc/PID/mem when the caller stops a walk early', () => {
    const reader = new ProcessMemoryReader({ chunkPages: 4 });
    const fds = openFds();
    for (const c of reader.chunks(child.pid!, { starts: [base + NONE_FROM], counts: [8] })) {
      expect(c.pages.length).toBe(4);
      break;
    }
    expect(openFds()).toBe(fds);
  });

  it('lists the pages neither path can read (unmapped) as unreadable, and reads the rest', async () => {
    child.stdin!.write('u\n');
    expect(await nextLine()).toBe('ok');
    const { read, unreadable } = readAll(new ProcessMemoryReader({ chunkPages: 7 }), child.pid!, base, PAGES);
    const gone = Array.from({ length: GONE[1] - GONE[0] }, (_, i) => base + GONE[0] + i);
    expect(unreadable).toEqual(gone);
    expect(read.size).toBe(PAGES - gone.length);
    for (const [p, bytes] of read) expect(bytes.equals(expectedPage(p - base)), `page ${p - base}`).toBe(true);
    // What a MEMORY_READ_FAILED says about them: addresses in hex.
    expect(describePageAddresses(unreadable)).toBe(gone.map((p) => `0x${(p * PAGE_SIZE).toString(16)}`).join(', '));
    expect(describePageAddresses(unreadable)).toMatch(/^0x[0-9a-f]+000(, 0x[0-9a-f]+000){3}$/);
  });
});

describe('describePageAddresses', () => {
  it('names the first pages by hex address and counts the rest', () => {
    expect(describePageAddresses([0x7f0012345, 0x7f0012346])).toBe('0x7f0012345000, 0x7f0012346000');
    expect(describePageAddresses([1, 2, 3], 2)).toBe('0x1000, 0x2000 (and 1 more)');
    expect(describePageAddresses([])).toBe('');
  });
});
