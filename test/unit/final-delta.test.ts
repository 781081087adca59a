/**
 * The final delta through the page pipeline, on a real-format image set: pages from the pages image and from the
 * stopped task, pages trusted unread on the tracker's word, the manifest of every dumped page's hash, and the
 * read-back check that catches a write the tracker missed.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePagemap, PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import type { PageRuns } from '../../shared/kernel/pagemap.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES, PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { decodePageBatch, readPageNumber } from '../../shared/transport/page-batch.js';
import { sendFinalDelta, verifyDumpedPages, type TaskPageReader } from '../../source-agent/pages/final-delta-pages.js';
import type { BatchSink } from '../../source-agent/pages/page-pipeline.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

// CRIU's pagemap images count in 4 KiB pages.
const PAGE = 4096;
const TASK = 7;
/** In the pages image: A..A+3 (A+3 all zero). Lazy, in the stopped task: B..B+5. */
const A = 0x1000;
const B = 0x2000;
/** Keys of non-task pagemaps start above every pid. */
const SHMEM_KEY = 0x80000000;

const bytesOf = (page: number, version = 0): Buffer => {
  const b = Buffer.alloc(PAGE, (page + version) & 0xff);
  b.writeDoubleLE(page, 0);
  b.writeUInt32LE(version, 8);
  return b;
};
const hashOf = (bytes: Buffer): Buffer => {
  const h = Buffer.alloc(HASH_BYTES);
  hashPages(bytes, 1, PAGE, h);
  return h;
};

let imagesDir: string;
const imageBytes = [bytesOf(A), bytesOf(A + 1), bytesOf(A + 2), Buffer.alloc(PAGE)];

beforeAll(async () => {
  imagesDir = await mkdtemp(join(tmpdir(), 'ferry-final-delta-'));
  const entries = [
    { vaddr: BigInt(A) * 4096n, nrPages: 4, flags: PE_PRESENT },
    { vaddr: BigInt(B) * 4096n, nrPages: 6, flags: PE_LAZY },
  ];
  await writeFile(join(imagesDir, `pagemap-${TASK}.img`), encodePagemap({ pagesId: 1, entries }));
  await writeFile(join(imagesDir, 'pages-1.img'), Buffer.concat(imageBytes));
  await writeFile(join(imagesDir, 'pagemap-shmem-9.img'), encodePagemap({ pagesId: 2, entries: [{ vaddr: 0x9000n * 4096n, nrPages: 2, flags: PE_PRESENT }] }));
  await writeFile(join(imagesDir, 'pages-2.img'), Buffer.concat([bytesOf(0x9000), bytesOf(0x9001)]));
  await writeFile(join(imagesDir, 'pstree.img'), Buffer.alloc(10));
});
afterAll(async () => {
  await rm(imagesDir, { recursive: true, force: true });
});

/** The stopped task: B..B+5, B+2 written since the last round. Records each read. */
function stoppedTask(memory = new Map(Array.from({ length: 6 }, (_, i) => [B + i, bytesOf(B + i, i === 2 ? 1 : 0)]))) {
  const reads: string[] = [];
  const readTask: TaskPageReader = (task, first, count) => {
    reads.push(`${task}:${first}+${count}`);
    const pages = Float64Array.from({ length: count }, (_, i) => first + i);
    return [{ data: Buffer.concat([...pages].map((p) => memory.get(p)!)), pages, unreadable: [] }];
  };
  return { memory, reads, readTask };
}

/** What pre-copy left the dest holding: A (same bytes), A+1 (older bytes), and B..B+5 as of the last round. */
function heldAfterPrecopy(): Map<number, PageHashIndex> {
  const index = new PageHashIndex();
  index.set(A, hashOf(bytesOf(A)), 0);
  index.set(A + 1, hashOf(bytesOf(A + 1, 9)), 0);
  for (let i = 0; i < 6; i++) index.set(B + i, hashOf(bytesOf(B + i)), 0);
  return new Map([[TASK, index]]);
}

function recorder(): { sink: BatchSink; sent: Map<number, number[]> } {
  const sent = new Map<number, number[]>();
  const sink: BatchSink = (task, batch) => {
    const d = decodePageBatch(batch, PAGE);
    const pages = sent.get(task) ?? [];
    for (let i = 0; i < d.count; i++) pages.push(readPageNumber(d.pageNumbers, i));
    sent.set(task, pages);
    return Promise.resolve();
  };
  return { sink, sent };
}

describe('final delta', () => {
  const changed = (): Map<number, PageRuns> => new Map([[TASK, { starts: [B + 2], counts: [1] }]]);

  it('for a lazy restore, marks the pages trusted on the tracker\'s word unconfirmed, one bit per page in pagemap order (issue 11)', async () => {
    const r = await sendFinalDelta(imagesDir, heldAfterPrecopy(), recorder().sink, PAGE, stoppedTask().readTask, changed(), 'lazy');
    const task = r.manifests.find((x) => x.task === TASK)!;
    // Indexes 0-3 are the pages image's (read), 4-9 the lazy B..B+5 of which B+2 (index 6) was written and read.
    expect([...task.unconfirmed!]).toEqual([0b1011_0000, 0b0000_0011]);
    expect(r.manifests.find((x) => x.task !== TASK)!.unconfirmed).toBeUndefined();
    expect(r.pageRuns[r.manifests.indexOf(task)]).toEqual({ starts: [A, B], counts: [4, 6] });
    // Eager: no bits at all.
    const eager = await sendFinalDelta(imagesDir, heldAfterPrecopy(), recorder().sink, PAGE, stoppedTask().readTask, changed());
    expect(eager.manifests.every((x) => x.unconfirmed === undefined)).toBe(true);
  });

  it('in post-copy reads no lazy page of a task: held ones go unconfirmed, missing ones remote (zero hash); present and shmem pages as ever (issue 12)', async () => {
    const index = new PageHashIndex();
    index.set(A, hashOf(bytesOf(A)), 0);
    index.set(A + 1, hashOf(bytesOf(A + 1, 9)), 0);
    // Pre-copy left B, B+1 and B+3 on the dest; B+2, B+4 and B+5 never went.
    for (const i of [0, 1, 3]) index.set(B + i, hashOf(bytesOf(B + i)), 0);
    const held = new Map([[TASK, index]]);
    const task = stoppedTask();
    const rec = recorder();
    // The tracker says B+1 and B+2 were written: post-copy reads neither (the fill compares B+1 with the original).
    const r = await sendFinalDelta(imagesDir, held, rec.sink, PAGE, task.readTask, new Map([[TASK, { starts: [B + 1], counts: [2] }]]), 'postcopy');
    expect(task.reads).toEqual([]);
    expect(rec.sent.get(TASK)).toEqual([A + 1, A + 2, A + 3]);
    expect(rec.sent.get(SHMEM_KEY)).toEqual([0x9000, 0x9001]);
    expect(r).toMatchObject({ dumpPages: 12, taskPages: 0, trustedPages: 3, remotePages: 3, sentPages: 5 });
    const man = r.manifests.find((x) => x.task === TASK)!;
    // Indexes 0-3: the pages image (read, confirmed); 4-9: B..B+5, every one unconfirmed; 6, 8 and 9 remote.
    expect([...man.unconfirmed!]).toEqual([0b1111_0000, 0b0000_0011]);
    expect([...man.remote!]).toEqual([0b0100_0000, 0b0000_0011]);
    const zero = Buffer.alloc(HASH_BYTES);
    for (const i of [6, 8, 9]) expect(man.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES).equals(zero)).toBe(true);
    for (const [i, p] of [[4, B], [5, B + 1], [7, B + 3]] as const) expect(man.hashes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES).equals(hashOf(bytesOf(p)))).toBe(true);
    // Remote pages are not held by the dest: the index gains nothing for them.
    expect(held.get(TASK)!.slotOf(B + 2)).toBeUndefined();
    const shmem = r.manifests.find((x) => x.task === SHMEM_KEY)!;
    expect(shmem.remote).toBeUndefined();
    expect(shmem.unconfirmed).toBeUndefined();
  });

  it('sends what the dest lacks, trusts the unwritten lazy pages unread, and hashes every dumped page', async () => {
    const task = stoppedTask();
    const held = heldAfterPrecopy();
    const rec = recorder();
    const r = await sendFinalDelta(imagesDir, held, rec.sink, PAGE, task.readTask, changed());
    expect(rec.sent.get(TASK)).toEqual([A + 1, A + 2, A + 3, B + 2]);
    expect(rec.sent.get(SHMEM_KEY)).toEqual([0x9000, 0x9001]);
    expect(task.reads).toEqual([`${TASK}:${B + 2}+1`]);
    expect(r).toMatchObject({ dumpPages: 12, trustedPages: 5, taskPages: 1, sentPages: 6, zeroPages: 1, sentBytes: 5 * PAGE });
    const manifest = r.manifests.find((m) => m.task === TASK)!;
    expect(manifest.pagemapImage).toBe(`pagemap-${TASK}.img`);
    const want = Buffer.concat([...imageBytes, ...Array.from({ length: 6 }, (_, i) => task.memory.get(B + i)!)].map(hashOf));
    expect(manifest.hashes.equals(want)).toBe(true);
    expect(r.manifests.map((m) => m.task)).toEqual([TASK, SHMEM_KEY]); // in image name order
    // What was sent is what the dest holds from now on.
    expect(held.get(TASK)!.holds(B + 2, hashOf(task.memory.get(B + 2)!), 0)).toBe(true);
    expect(held.get(SHMEM_KEY)!.size).toBe(2);
    // The read-back beside the restore agrees with the manifest.
    expect(await verifyDumpedPages(imagesDir, r.manifests, PAGE, task.readTask)).toBe(12);
  });

  it('reads every lazy page when the tracker cannot tell (hash tracker)', async () => {
    const task = stoppedTask();
    const rec = recorder();
    const r = await sendFinalDelta(imagesDir, heldAfterPrecopy(), rec.sink, PAGE, task.readTask);
    expect(task.reads).toEqual([`${TASK}:${B}+6`]);
    expect(r).toMatchObject({ trustedPages: 0, taskPages: 6 });
    expect(rec.sent.get(TASK)).toEqual([A + 1, A + 2, A + 3, B + 2]);
  });

  it('catches a write the tracker missed in the read-back (TRACKER_MISSED_PAGE)', async () => {
    const task = stoppedTask();
    const r = await sendFinalDelta(imagesDir, heldAfterPrecopy(), recorder().sink, PAGE, task.readTask, changed());
    task.memory.set(B + 4, bytesOf(B + 4, 5)); // written, but not in `changed`: trusted, so its old hash is in the manifest
    const e = await expectFerryRejection(verifyDumpedPages(imagesDir, r.manifests, PAGE, task.readTask), 'TRACKER_MISSED_PAGE');
    expect(e.detail).toContain(`page at 0x${((B + 4) * PAGE).toString(16)}:`); // an address, in hex
  });

  it('refuses a stopped task whose lazy page cannot be read (MEMORY_READ_FAILED)', async () => {
    const readTask: TaskPageReader = (_task, first, count) => [{ data: Buffer.alloc(0), pages: new Float64Array(0), unreadable: Array.from({ length: count }, (_, i) => first + i) }];
    const e = await expectFerryRejection(sendFinalDelta(imagesDir, new Map(), recorder().sink, PAGE, readTask), 'MEMORY_READ_FAILED');
    expect(e.phase).toBe('final-delta');
    // The addresses in hex, not page numbers in decimal (maps04's "pages 34254928906"): the first five, and a count.
    expect(e.detail).toBe('pages at 0x2000000, 0x2001000, 0x2002000, 0x2003000, 0x2004000 (and 1 more) of the stopped task cannot be read');
  });
});
