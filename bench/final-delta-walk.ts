/**
 * Micro-benchmark of what the source does with a lazy dump's pages inside the freeze (issue 11, item 4): the
 * final delta's walk over every pagemap page when the tracker says almost nothing changed (held pages: their
 * hash copied into the manifest, and for a lazy restore the unconfirmed bits), and the eager restore's
 * read-back (verifyDumpedPages) that a lazy restore moves out of the freeze, and where that check goes instead:
 * the fill's sweep (confirm-pages.ts) over every trusted page after the resume. The task's memory is a buffer
 * (no process_vm_readv): this measures Ferry's own JS and hashing, not the kernel.
 *   npx vite-node bench/final-delta-walk.ts [MiB...]   (default 256 1024)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePagemap, PE_LAZY } from '../shared/criu/pagemap-image.js';
import { hashPages } from '../shared/native/addon.js';
import { PageHashIndex } from '../shared/pages/page-hash-index.js';
import { sendFinalDelta, verifyDumpedPages, type TaskPageReader } from '../source-agent/pages/final-delta-pages.js';
import { confirmPages } from '../source-agent/pages/confirm-pages.js';
import { silentLogger } from '../shared/logging/logger.js';

const PAGE = 4096;
// A page number of an mmap area (0x7f00_0000_0000): beyond a small integer, as in a real task.
const FIRST = 0x7f0000000;
const CHUNK = 256;

async function one(mib: number): Promise<void> {
  const pages = (mib * 1024 * 1024) / PAGE;
  const dir = await mkdtemp(join(tmpdir(), 'ferry-walk-'));
  try {
    // One VMA-sized lazy entry per 64 MiB, as CRIU writes them for a big anonymous mapping split by protections.
    const per = 16384;
    const entries = [];
    for (let p = 0; p < pages; p += per) entries.push({ vaddr: BigInt(FIRST + p) * 4096n, nrPages: Math.min(per, pages - p), flags: PE_LAZY });
    await writeFile(join(dir, 'pagemap-1.img'), encodePagemap({ pagesId: 1, entries }));
    const chunk = Buffer.alloc(CHUNK * PAGE, 1);
    const h = Buffer.alloc(CHUNK * 16);
    hashPages(chunk, CHUNK, PAGE, h);
    const index = new PageHashIndex();
    for (let p = 0; p < pages; p++) index.set(FIRST + p, h, (p % CHUNK) * 16);
    // 0.1 % of the pages written since the last round: the tracker's changed runs.
    const changed = new Map([[1, { starts: Array.from({ length: Math.ceil(pages / 1000) }, (_, i) => FIRST + i * 1000), counts: Array.from({ length: Math.ceil(pages / 1000) }, () => 1) }]]);
    const readTask: TaskPageReader = function* (_task, first, count) {
      for (let d = 0; d < count; d += CHUNK) {
        const n = Math.min(CHUNK, count - d);
        yield { data: chunk.subarray(0, n * PAGE), pages: Float64Array.from({ length: n }, (_, i) => first + d + i), unreadable: [] };
      }
    };
    const sink = () => Promise.resolve();
    const runs: Record<string, number[]> = { eager: [], lazy: [], verify: [], sweep: [] };
    for (let rep = 0; rep < 5; rep++) {
      for (const mode of ['eager', 'lazy'] as const) {
        const t0 = performance.now();
        await sendFinalDelta(dir, new Map([[1, index]]), sink, PAGE, readTask, changed, mode);
        runs[mode]!.push(performance.now() - t0);
      }
      const d = await sendFinalDelta(dir, new Map([[1, index]]), sink, PAGE, readTask, changed);
      const t0 = performance.now();
      await verifyDumpedPages(dir, d.manifests, PAGE, readTask);
      runs.verify!.push(performance.now() - t0);
      // The fill's sweep against a dest that takes every request at once (the source's side of the fill alone).
      const lazy = await sendFinalDelta(dir, new Map([[1, index]]), sink, PAGE, readTask, changed, 'lazy');
      const m = lazy.manifests[0]!;
      const manifest = { task: 1, hostPid: 1, runs: lazy.pageRuns[0]!, hashes: m.hashes, unconfirmed: m.unconfirmed ?? Buffer.alloc(0), remote: Buffer.alloc(0) };
      const t1 = performance.now();
      await confirmPages(
        (h) => {
          let n = 0;
          return {
            write: (req) => {
              n += req.count;
              if (n >= lazy.trustedPages) {
                h.event({ done: { filledPages: '0', faults: '0', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '0', faultsWaited: '0' } });
                setImmediate(() => h.end(undefined));
              }
              return Promise.resolve();
            },
            end: () => undefined,
            cancel: () => undefined,
          };
        },
        { migrationId: 'm', epoch: '1', manifests: [manifest], pageSize: PAGE, readPages: (pid, first, count) => readTask(1, first, count), log: silentLogger, signal: new AbortController().signal },
      );
      runs.sweep!.push(performance.now() - t1);
    }
    const med = (xs: number[]): string => [...xs].sort((a, b) => a - b)[xs.length >> 1]!.toFixed(1);
    const sweepMs = Number(med(runs.sweep!));
    console.log(
      `${mib} MiB (${pages} pages): final delta walk eager ${med(runs.eager!)} ms, lazy ${med(runs.lazy!)} ms; ` +
        `read-back (eager only, in the freeze) ${med(runs.verify!)} ms; fill sweep (lazy, after the resume) ${sweepMs} ms = ${((pages * PAGE) / (sweepMs / 1000) / 1e9).toFixed(2)} GB/s`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

for (const mib of process.argv.slice(2).length > 0 ? process.argv.slice(2).map(Number) : [256, 1024]) await one(mib);
