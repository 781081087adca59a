/**
 * What a newer Node offers for the page plane, measured against what Ferry does now (issue 17): hashing pages
 * (Ferry: XXH3-128 in its N-API addon, batched; node:crypto has no XXH3, only digests such as SHA-1 and MD5) and
 * compressing them (Ferry sends pages raw; node:zlib has zstd from Node 22.15 and 23.8, gzip and brotli on every
 * version: the data for issue 15's choice). Run it under each runtime:
 *   npx vite-node bench/runtime-features.ts [MiB]          (default 64; no root needed for random pages)
 *   PATH=$(dirname "$(bash scripts/provision-node.sh 24)"):$PATH npx vite-node bench/runtime-features.ts
 * Two inputs: pages of this process's own heap (a real process's memory: objects, strings, code; zero pages left
 * out, Ferry flags those) read through /proc/self/mem, and random pages (the memtest workload's, incompressible).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import * as zlib from 'node:zlib';
import { hashPages } from '../shared/native/addon.js';

const PAGE = 4096;
/** The unit one compresses: a batch of the page stream is about this size. */
const CHUNK = 256 * PAGE;

function heapPages(bytes: number): Buffer {
  // Make the heap worth reading: objects and strings as an agent's or an application's heap holds them.
  const keep: unknown[] = [];
  for (let i = 0; i < 400_000; i++) keep.push({ id: i, name: `task-${i}-${(i * 2654435761) % 1e9}`, when: new Date(1e12 + i).toISOString(), tags: [i % 7, i % 11] });
  (globalThis as { __keep?: unknown }).__keep = keep;
  const out = Buffer.alloc(bytes);
  let used = 0;
  const fd = openSync('/proc/self/mem', 'r');
  try {
    for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw.p \S+ \S+ \d+\s*(\S*)$/.exec(line);
      if (!m || (m[3] !== '' && m[3] !== '[heap]')) continue;
      for (let a = parseInt(m[1]!, 16); a < parseInt(m[2]!, 16) && used < bytes; a += PAGE) {
        try {
          if (readSync(fd, out, used, PAGE, a) !== PAGE) continue;
        } catch {
          continue; // a guard page
        }
        if (out.subarray(used, used + PAGE).some((b) => b !== 0)) used += PAGE;
      }
    }
  } finally {
    closeSync(fd);
  }
  return out.subarray(0, used - (used % CHUNK));
}

function mbps(bytes: number, ms: number): string {
  return ((bytes / 1048576 / ms) * 1000).toFixed(0).padStart(6);
}

/** The best of three runs: the 2 shared cores' other load only ever slows a run down. */
function best(fn: () => number): { ms: number; out: number } {
  let ms = Infinity;
  let out = 0;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    out = fn();
    ms = Math.min(ms, performance.now() - t0);
  }
  return { ms, out };
}

function hashing(data: Buffer): void {
  const pages = data.byteLength / PAGE;
  const h = Buffer.alloc(256 * 16);
  const addon = best(() => {
    for (let p = 0; p < pages; p += 256) hashPages(data.subarray(p * PAGE), Math.min(256, pages - p), PAGE, h);
    return pages;
  });
  console.log(`  hash  XXH3-128 addon (batch of 256)   ${mbps(data.byteLength, addon.ms)} MiB/s`);
  for (const algo of ['md5', 'sha1']) {
    const r = best(() => {
      for (let p = 0; p < pages; p++) createHash(algo).update(data.subarray(p * PAGE, (p + 1) * PAGE)).digest();
      return pages;
    });
    console.log(`  hash  node:crypto ${algo.padEnd(4)} per page        ${mbps(data.byteLength, r.ms)} MiB/s  (${(r.ms / addon.ms).toFixed(1)}x the addon's time)`);
  }
}

function compression(data: Buffer): void {
  const zstd = (zlib as unknown as { zstdCompressSync?: (b: Buffer, o?: object) => Buffer }).zstdCompressSync;
  const zstdParam = (zlib.constants as unknown as Record<string, number>).ZSTD_c_compressionLevel;
  const codecs: [string, ((b: Buffer) => Buffer) | undefined][] = [
    ['zstd level 1', zstd && zstdParam !== undefined ? (b) => zstd(b, { params: { [zstdParam]: 1 } }) : undefined],
    ['zstd level 3', zstd ? (b) => zstd(b) : undefined],
    ['gzip level 1', (b) => zlib.gzipSync(b, { level: 1 })],
    ['brotli quality 1', (b) => zlib.brotliCompressSync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 } })],
  ];
  for (const [name, codec] of codecs) {
    if (!codec) {
      console.log(`  zlib  ${name.padEnd(28)}   absent from Node ${process.version} (zlib.zstdCompress: 22.15+, 23.8+)`);
      continue;
    }
    const r = best(() => {
      let out = 0;
      for (let o = 0; o < data.byteLength; o += CHUNK) out += codec(data.subarray(o, o + CHUNK)).byteLength;
      return out;
    });
    console.log(`  zlib  ${name.padEnd(28)} ${mbps(data.byteLength, r.ms)} MiB/s  ratio ${(data.byteLength / r.out).toFixed(2)} (1 MiB chunks)`);
  }
}

const mib = Number(process.argv[2] ?? 64);
console.log(`node ${process.version} (V8 ${process.versions.v8}, N-API ${process.versions.napi}), ${mib} MiB per input, best of 3`);
const random = randomFillSync(Buffer.alloc(mib * 1048576));
let heap: Buffer | undefined;
try {
  heap = heapPages(mib * 1048576);
} catch (e) {
  console.log(`  (no heap pages: ${(e as Error).message}; run as root)`);
}
console.log('random pages (memtest-like)');
hashing(random);
compression(random);
if (heap && heap.byteLength > 0) {
  console.log(`this process's heap pages (${(heap.byteLength / 1048576).toFixed(0)} MiB, zero pages left out)`);
  hashing(heap);
  compression(heap);
}
