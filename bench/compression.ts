/**
 * Compression's figures (`npm run bench:compression`, issue 15), side by side in one run:
 * 1. the codec alone: zstd level 1 (koffi -> libzstd.so.1) on heap-like and random pages in 1 MiB batches:
 *    ratio, compress and decompress MB/s of raw bytes (one core);
 * 2. migrations between the two netns hosts of a heap-like and of a random (incompressible) memtest, with
 *    --compress off and auto, on a 100 Mbit/s tbf link and on the unshaped veth: total time, downtime, page bytes
 *    raw and on the wire, the codec of each round. Every copy verifies every page.
 * BENCH_COMPRESS_MIB (default 128) sizes the tasks; BENCH_COMPRESS_LINKS (default 100mbit,unshaped) picks links.
 * Ratios are within this run (2 shared cores: compare rows, not runs).
 */
import { rmSync } from 'node:fs';
import zlib from 'node:zlib';
import { BatchPayloadDecoder, BatchPayloadEncoder, PAGE_CODEC } from '../shared/pages/batch-codec.js';
import { zstdProblem } from '../shared/native/zstd.js';
import { heapLikePages, randomPages } from '../testbed/page-contents.js';
import { createTwoHosts, makeTempDir, requireBuilt, runMigrate, startDestAgent, type TwoHosts } from '../testbed/two-hosts.js';
import { startMemtest } from '../testbed/workloads/memtest.js';
import { LINKS, type LinkId } from './cases.js';
import { shapeLink } from './link.js';

const PAGE = 4096;
const MIB = Number(process.env.BENCH_COMPRESS_MIB ?? 128);
const LINK_IDS = (process.env.BENCH_COMPRESS_LINKS ?? '100mbit,unshaped').split(',') as LinkId[];

function codecFigures(name: string, make: (pages: number, seed: number) => Buffer): string {
  const batches = Array.from({ length: 16 }, (_, i) => make(256, i + 1)); // 16 different 1 MiB batches
  const encoder = new BatchPayloadEncoder(1);
  const decoder = new BatchPayloadDecoder();
  const kinds = Buffer.alloc(256);
  let raw = 0;
  let frames = 0;
  let compressMs = 0;
  let decompressMs = 0;
  let decoded = 0;
  for (let rep = 0; rep < 8; rep++) {
    for (const b of batches) {
      const t0 = performance.now();
      const e = encoder.encode(b, 'zstd');
      compressMs += performance.now() - t0;
      raw += b.length;
      frames += e.frameBytes ?? b.length;
      if (e.codec === 'none') continue; // sent as it is: nothing to decode
      const payload = Buffer.from(e.payload);
      const t1 = performance.now();
      decoder.decode({ codec: PAGE_CODEC[e.codec], payload, rawBytes: b.length }, kinds, 256, PAGE);
      decompressMs += performance.now() - t1;
      decoded += b.length;
    }
  }
  const mbps = (bytes: number, ms: number): string => (bytes > 0 ? (bytes / 1e6 / (ms / 1000)).toFixed(0) : '- (sent raw)');
  return `| ${name} | ${(raw / frames).toFixed(2)} | ${mbps(raw, compressMs)} | ${mbps(decoded, decompressMs)} |`;
}

type ZstdSync = (b: Buffer, o: { params: Record<number, number> }) => Buffer;

/**
 * node:zlib's zstd (Node 22.15+) on the same batches, for the comparison the codec's choice rests on: Ferry takes
 * koffi -> libzstd, measured faster (reused context and buffer) in every run under Node 22 and 24 here.
 */
function zlibFigures(): string {
  const z = zlib as unknown as { zstdCompressSync?: ZstdSync; constants: Record<string, number> };
  if (!z.zstdCompressSync) return `| (node:zlib has no zstd in Node ${process.version}) | | | |`;
  const level = z.constants.ZSTD_c_compressionLevel!;
  const batches = Array.from({ length: 16 }, (_, i) => heapLikePages(256, PAGE, i + 1));
  let raw = 0;
  let out = 0;
  const t0 = performance.now();
  for (let rep = 0; rep < 8; rep++) {
    for (const b of batches) {
      raw += b.length;
      out += z.zstdCompressSync(b, { params: { [level]: 1 } }).length;
    }
  }
  return `| heap-like, node:zlib zstd | ${(raw / out).toFixed(2)} | ${(raw / 1e6 / ((performance.now() - t0) / 1000)).toFixed(0)} | - |`;
}

interface Row {
  link: string;
  workload: string;
  compress: string;
  totalMs: number;
  downtimeMs: number;
  raw: number;
  wire: number;
  codecs: string;
  ok: boolean;
}

async function migrations(hosts: TwoHosts): Promise<Row[]> {
  const rows: Row[] = [];
  const stateDir = makeTempDir('ferry-bench-zstd-');
  const dest = await startDestAgent(hosts);
  const signal = AbortSignal.timeout(60 * 60_000);
  try {
    for (const linkId of LINK_IDS) {
      const link = LINKS[linkId];
      await shapeLink(hosts, link, signal);
      for (const heapLike of [true, false]) {
        for (const compress of ['off', 'auto']) {
          const name = `bench-zstd-${linkId}-${heapLike ? 'heap' : 'random'}-${compress}`;
          const task = await startMemtest({ name, mib: MIB, dirtyMibPerSec: 1, content: heapLike ? 'objects' : 'random', stateDir, netns: hosts.src.netns });
          try {
            const r = await runMigrate(hosts, task.rootPid, dest, { args: ['--compress', compress], timeoutMs: 30 * 60_000 });
            const s = r.summary;
            if (r.exitCode !== 0 || !s) throw new Error(`${name}: exit ${r.exitCode}: ${r.stderr.slice(-2000)}`);
            task.adopt(s.restoredPid);
            const v = await task.verify(s.restoredPid);
            rows.push({
              link: link.label,
              workload: heapLike ? 'heap-like' : 'random',
              compress,
              totalMs: s.totalMs,
              downtimeMs: s.downtimeMs,
              raw: s.pageBytesSent,
              wire: s.pageWireBytes,
              codecs: s.rounds.map((x) => x.codec).join(' '),
              ok: v.bad_pages === 0,
            });
            console.error(`${name}: ${Math.round(s.totalMs)} ms, ${s.pageBytesSent} -> ${s.pageWireBytes} bytes, rounds ${rows.at(-1)!.codecs}`);
          } finally {
            await task.stop();
          }
        }
      }
    }
  } finally {
    await dest.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
  return rows;
}

async function main(): Promise<void> {
  const problem = zstdProblem();
  if (problem) throw new Error(`no zstd here: ${problem}`);
  console.log('## zstd level 1 on 1 MiB batches (one core)\n');
  console.log('| pages | ratio | compress MB/s | decompress MB/s |\n|---|---|---|---|');
  console.log(codecFigures('heap-like', (n, seed) => heapLikePages(n, PAGE, seed)));
  console.log(codecFigures('random', (n) => randomPages(n, PAGE)));
  console.log(zlibFigures());

  requireBuilt();
  const hosts = await createTwoHosts();
  let rows: Row[];
  try {
    rows = await migrations(hosts);
  } finally {
    await hosts.destroy();
  }
  console.log(`\n## ${MIB} MiB memtest (1 MiB/s dirtying), --compress off vs auto\n`);
  console.log('| link | pages | compress | total | downtime | page bytes raw | on the wire | rounds | verified | total vs off |\n|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const off = rows.find((x) => x.link === r.link && x.workload === r.workload && x.compress === 'off');
    const mb = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
    console.log(
      `| ${r.link} | ${r.workload} | ${r.compress} | ${(r.totalMs / 1000).toFixed(2)} s | ${Math.round(r.downtimeMs)} ms | ${mb(r.raw)} | ${mb(r.wire)} | ${r.codecs} | ${r.ok ? 'yes' : 'NO'} | ${off ? (r.totalMs / off.totalMs).toFixed(2) : '-'} |`,
    );
  }
}

await main();
