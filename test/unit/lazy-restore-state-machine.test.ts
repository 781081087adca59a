/**
 * The source's state machine with a lazy restore (issue 11), against the fake world: the commit rule grows one
 * step (the original stays frozen after the Commit until the dest reports every page in, and is killed only
 * then), the trusted pages are confirmed against the frozen original during the fill (wanted pages first, a
 * page that differs sent as bytes), a dest whose fill failed gets the original thawed, a broken fill call is
 * opened again, and a dest that stops answering leaves the original frozen for --resume.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePagemap, PE_LAZY } from '../../shared/criu/pagemap-image.js';
import { SystemCallError, type FerryError } from '../../shared/errors/ferry-error.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { hashPages } from '../../shared/native/addon.js';
import { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { PAGE_KIND_DATA, writePageNumber } from '../../shared/transport/page-batch.js';
import { compileMigrateOptions, type MigrateOptions } from '../../source-agent/config/migrate-options.js';
import type { MigrationEvent } from '../../source-agent/migration/events.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import type { MigrationPorts, SourceHost } from '../../source-agent/migration/ports.js';
import type { DirtyTracker } from '../../source-agent/trackers/tracker.js';
import { PAGE, ROLLBACK_CASES, world, type Failure, type FillScript } from '../fakes/fake-migration-world.js';

let imagesRoot: string;
beforeAll(async () => {
  imagesRoot = await mkdtemp(join(tmpdir(), 'ferry-lazy-sm-'));
});
afterAll(async () => {
  await rm(imagesRoot, { recursive: true, force: true });
});

/** The task's memory: 6 lazy pages from page 0x1000; pre-copy sent the first 4 (fill 1), the tracker saw no write since. */
const FIRST = 0x1000;
const PAGES = 6;
const HELD = 4;

/** A tracker that sent pages 0x1000..0x1003 in round 0 (and holds them), and reports nothing written since. */
function tracker(fail?: Failure, dirtyAfterRound0?: number): DirtyTracker {
  let rounds = 0;
  return {
    name: 'uffd-wp',
    changedSinceLastRound: () => new Map([[1, { starts: [], counts: [] }]]),
    round: async (_tasks, held, sink, _signal, beforeRead) => {
      const round = rounds++;
      if (fail === 'precopy') throw new Error('fake failure at precopy');
      // An exact tracker's scan found this dirty set after round 0: it asks before it reads any of it.
      if (round > 0 && dirtyAfterRound0 !== undefined && beforeRead && !beforeRead(dirtyAfterRound0, PAGES)) {
        return { presentPages: PAGES, dirtyPages: dirtyAfterRound0, zeroPages: 0, bytesRead: 0, readMs: 0, bytesSent: 0, vanishedPages: 0, candidatePages: dirtyAfterRound0, stoppedBeforeRead: true };
      }
      // A round 0 of 50 ms at least: the rate it gives makes any dirty set here miss a 1 ms budget.
      if (round === 0 && dirtyAfterRound0 !== undefined) await new Promise((r) => setTimeout(r, 50));
      if (round === 0) {
        const index = new PageHashIndex();
        held.set(1, index);
        for (let p = FIRST; p < FIRST + HELD; p++) {
          const data = Buffer.alloc(PAGE, 1);
          const hashes = Buffer.alloc(16);
          hashPages(data, 1, PAGE, hashes);
          const pageNumbers = Buffer.alloc(8);
          writePageNumber(pageNumbers, 0, p);
          await sink(1, { pageNumbers, hashes, kinds: Buffer.from([PAGE_KIND_DATA]), data });
          index.set(p, hashes, 0);
        }
      }
      return { presentPages: PAGES, dirtyPages: round === 0 ? HELD : 0, zeroPages: 0, bytesRead: PAGE, readMs: 1, bytesSent: round === 0 ? HELD * PAGE : 0, vanishedPages: 0 };
    },
    close: () => undefined,
  };
}

interface LazyRun {
  fail?: Failure;
  fill?: FillScript;
  lazyDest?: boolean;
  options?: Partial<MigrateOptions>;
  /** Pages of the frozen original whose bytes differ from what pre-copy sent (page -> fill byte). */
  differs?: Map<number, number>;
  /** The original is gone by the time the fill reads it (process_vm_readv: ESRCH). */
  originalGone?: boolean;
  /** The original died after the Commit and its pid now belongs to another process (another start time). */
  pidReused?: boolean;
  /** The dirty set the tracker's scan finds after round 0 (asked through BeforeRead). */
  dirtyAfterRound0?: number;
  /** The tree holds a connected TCP socket: the dump is --tcp-established. */
  tcpConnected?: boolean;
}

async function runLazy(o: LazyRun = {}) {
  const w = world(o.fail, { lazyDest: o.lazyDest ?? true, fill: o.fill, tcpConnected: o.tcpConnected });
  const host: SourceHost = {
    ...w.ports.host,
    createTracker: () => tracker(o.fail, o.dirtyAfterRound0),
    dump: async ({ imagesDir }) => {
      w.log.push('dump');
      if (o.fail === 'dump') throw new Error('fake failure at dump');
      await writeFile(join(imagesDir, 'pagemap-1.img'), encodePagemap({ pagesId: 1, entries: [{ vaddr: BigInt(FIRST) * 4096n, nrPages: PAGES, flags: PE_LAZY }] }));
      await writeFile(join(imagesDir, 'pstree.img'), Buffer.alloc(10));
      await writeFile(join(imagesDir, 'inventory.img'), Buffer.alloc(10));
      return 'lazy' as const;
    },
    startTime: () => (o.pidReused && w.log.includes('dest.commit') ? 2 : 1),
    readPages: (_pid, first, count) => {
      w.log.push(`read ${first - FIRST}+${count}`);
      if (o.originalGone && w.log.includes('dest.commit')) throw new SystemCallError('process_vm_readv', 3, 'ESRCH');
      const pages = new Float64Array(count).map((_, i) => first + i);
      const data = Buffer.alloc(count * PAGE, 1);
      for (let i = 0; i < count; i++) {
        const fill = o.differs?.get(first + i);
        if (fill !== undefined) data.fill(fill, i * PAGE, (i + 1) * PAGE);
      }
      return [{ data, pages, unreadable: [] }];
    },
  };
  const ports: MigrationPorts = { ...w.ports, host };
  const events: MigrationEvent[] = [];
  const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1, commitPatienceMs: 1_500, undeliveredPatienceMs: 300, ...o.options });
  const result = await migrate(opts, { log: silentLogger, emit: (e) => events.push(e), signal: new AbortController().signal, ports }).then(
    (summary) => ({ summary, error: undefined }),
    (e: unknown) => ({ summary: undefined, error: e as FerryError }),
  );
  /** The Fill requests after each call's first one (which only names the session), as "index+count[ bytes]". */
  const answers = w.fillRequests.filter((r) => r.count > 0).map((r) => `${r.firstIndex}+${r.count}${r.data.length > 0 ? ' bytes' : ''}${r.withData ? `[${bitsOf(r.withData).join()}]` : ''}`);
  return { ...w, ...result, events, answers };
}

/** The bits set in an LSB-first bitmap. */
const bitsOf = (bits: Buffer): number[] => Array.from({ length: bits.length * 8 }, (_, i) => i).filter((i) => (bits[i >> 3]! & (1 << (i & 7))) !== 0);

const at = (log: string[], x: string): number => {
  const i = log.indexOf(x);
  if (i < 0) throw new Error(`${x} not in the log: ${log.join(', ')}`);
  return i;
};

describe('lazy restore: the source side (issue 11)', () => {
  it('auto picks lazy where the dest offers it; Restore says lazy and the trusted pages are unconfirmed in the manifest', async () => {
    const r = await runLazy();
    expect(r.error).toBeUndefined();
    const req = r.restoreRequest()!;
    expect(req.mode).toBe('RESTORE_MODE_LAZY');
    // Pages 0..3 were taken on the tracker's word: bits 0-3 set, LSB first; 4 and 5 were read (confirmed).
    expect([...req.pages[0]!.unconfirmed!]).toEqual([0b1111]);
    expect(r.summary).toMatchObject({ restoreMode: 'lazy', confirmedPages: HELD, replacedPages: 0, fillFaults: 2, fillFaultsWaited: 1 });
    // The manifests went to disk beside the journal before the Commit could be sent.
    expect(at(r.log, 'journal.manifests')).toBeLessThan(at(r.log, 'journal.committing'));
    expect(r.savedManifests[0]![0]).toMatchObject({ task: 1, hostPid: 4242, runs: { starts: [FIRST], counts: [PAGES] } });
  });

  it('kills the original only after the dest reports every page in, never before; the downtime ends at the Commit answer', async () => {
    const r = await runLazy({ fill: { calls: ['done'], doneDelayMs: 300 } });
    expect(r.error).toBeUndefined();
    // The fill is opened beside the Restore (criu's restorer may fault on a page); it sweeps only after the Commit.
    expect(at(r.log, 'dest.fill(done)')).toBeLessThan(at(r.log, 'dest.commit'));
    const order = ['dest.restore(pagemap-1.img)', 'lease.disarm', 'journal.committing', 'dest.commit', 'journal.committed', 'dest.fill-sweep', 'dest.fill-done', 'journal.filled', 'signal.SIGKILL', 'journal.done'].map((x) => at(r.log, x));
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(r.log.filter((x) => x === 'signal.SIGKILL')).toHaveLength(1);
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.journaled.find((j) => j.state === 'committed')).toMatchObject({ restoredPid: 777, fill: 'pending' });
    expect(r.summary!.fillMs).toBeGreaterThanOrEqual(290);
    expect(r.summary!.downtimeMs).toBeLessThan(r.summary!.fillMs);
    expect(r.events.filter((e) => e.kind === 'phase').map((e) => (e as { phase: string }).phase)).toEqual(['prepare', 'precopy', 'freeze', 'final-delta', 'restore', 'commit', 'fill']);
  });

  it('does not read the trusted pages back inside the freeze: the first read of them comes after the Commit', async () => {
    const r = await runLazy();
    const reads = r.log.map((x, i) => [x, i] as const).filter(([x]) => x.startsWith('read'));
    // The final delta reads the two pages the dest lacks; the fill reads the four trusted ones after the Commit.
    expect(reads.map(([x]) => x)).toEqual([`read ${HELD}+2`, 'read 0+4']);
    expect(reads[1]![1]).toBeGreaterThan(at(r.log, 'dest.commit'));
  });

  it('answers the pages the dest wants first, ahead of the sweep', async () => {
    const r = await runLazy({ fill: { calls: ['done'], wants: [{ task: 1, firstIndex: '2', count: 1, bytes: false }] } });
    expect(r.error).toBeUndefined();
    // The wanted page first; the sweep then skips it: 0-1 and 3.
    expect(r.answers).toEqual(['2+1', '0+2', '3+1']);
    expect(r.summary!.confirmedPages).toBe(HELD);
  });

  it('a wanted page with bytes (the dest\'s copy damaged) is sent as bytes even though its hash matches', async () => {
    const r = await runLazy({ fill: { calls: ['done'], wants: [{ task: 1, firstIndex: '5', count: 1, bytes: true }] } });
    expect(r.error).toBeUndefined();
    expect(r.answers[0]).toBe('5+1 bytes');
    expect(r.summary!.replacedPages).toBe(0);
  });

  it('a trusted page that differs in the frozen original is sent as the original\'s bytes, and counted', async () => {
    const r = await runLazy({ differs: new Map([[FIRST + 1, 9]]) });
    expect(r.error).toBeUndefined();
    // One request for the chunk: its with_data bitmap names the page sent as bytes (issue 12).
    expect(r.answers).toEqual(['0+4 bytes[1]']);
    const sent = r.fillRequests.find((q) => q.data.length > 0)!;
    expect(sent.data.equals(Buffer.alloc(PAGE, 9))).toBe(true);
    expect(r.summary).toMatchObject({ replacedPages: 1, confirmedPages: HELD - 1 });
  });

  it('FILL_FAILED from the dest (its copy killed): the original is thawed, never killed, the journal done rolled back', async () => {
    const r = await runLazy({ fill: { calls: ['failed'] } });
    expect(r.error?.key).toBe('FILL_FAILED');
    expect(r.error?.phase).toBe('fill');
    expect(r.error?.sourceState).toBe('running');
    expect(r.log).toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(at(r.log, 'dest.fill(failed)')).toBeLessThan(at(r.log, 'signal.SIGCONT'));
    // The dest's copy was committed: nothing aborts it (the dest killed it itself).
    expect(r.log).not.toContain('dest.abort');
    expect(r.journaled.at(-1)).toMatchObject({ state: 'done', outcome: 'rolled-back', code: 'FERRY-7005' });
  });

  it('FILL_FAILED after a --tcp-established dump: the sockets leave repair and the lock goes before the thaw, once', async () => {
    const r = await runLazy({ fill: { calls: ['failed'] }, tcpConnected: true });
    expect(r.error?.key).toBe('FILL_FAILED');
    expect(r.log.filter((x) => x === 'tcp.undo')).toHaveLength(1);
    expect(at(r.log, 'tcp.undo')).toBeLessThan(at(r.log, 'signal.SIGCONT'));
    expect(r.log).not.toContain('tcp.drop-lock');
  });

  it('a lazy restore after a --tcp-established dump: the lock is deleted after the fill killed the original', async () => {
    const r = await runLazy({ fill: { calls: ['done'] }, tcpConnected: true });
    expect(r.error).toBeUndefined();
    expect(r.log).not.toContain('tcp.undo');
    expect(at(r.log, 'tcp.drop-lock')).toBeGreaterThan(at(r.log, 'signal.SIGKILL'));
  });

  it('a fill call that breaks is opened again, the sweep from the start', async () => {
    const r = await runLazy({ fill: { calls: ['drop', 'done'] } });
    expect(r.error).toBeUndefined();
    expect(r.log.filter((x) => x.startsWith('dest.fill('))).toEqual(['dest.fill(drop)', 'dest.fill(done)']);
    expect(r.log.indexOf('signal.SIGKILL')).toBeGreaterThan(at(r.log, 'dest.fill-done'));
  });

  it('a dest that stops answering the fill for --commit-patience: the original stays frozen, the journal at committed with the fill pending, exit 3 naming --resume', async () => {
    const r = await runLazy({ fill: { calls: ['drop'] }, options: { commitPatienceMs: 700 } });
    expect(r.error?.key).toBe('MIGRATION_UNRESOLVED');
    expect(r.error?.sourceState).toBe('frozen');
    expect(r.error?.detail).toContain(`ferry migrate --resume ${String(r.journaled[0]!.migrationId)}`);
    expect(r.log.filter((x) => x.startsWith('dest.fill(')).length).toBeGreaterThan(1);
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('dest.abort');
    expect(r.journaled.at(-1)).toMatchObject({ state: 'committed', fill: 'pending' });
  }, 15_000);

  // Every failure of the eager table, and the manifests' write beside the restore.
  it('a dest that takes the fill and then says nothing (the stream open) is given up after --commit-patience: the original stays frozen', async () => {
    const r = await runLazy({ fill: { calls: ['hang'] }, options: { commitPatienceMs: 600 } });
    expect(r.error?.key).toBe('MIGRATION_UNRESOLVED');
    expect(r.error?.sourceState).toBe('frozen');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.journaled.at(-1)).toMatchObject({ state: 'committed', fill: 'pending' });
  }, 15_000);

  const before = [...ROLLBACK_CASES, { fail: 'manifests', phase: 'restore', frozen: true, prepared: true } as const];
  for (const c of before) {
    it(`a failure at ${c.fail} (before the resume) rolls back: the original resumes, nothing swept, never a kill`, async () => {
      const r = await runLazy({ fail: c.fail });
      expect(r.error?.phase).toBe(c.phase);
      expect(r.error?.sourceState).toBe('running');
      expect(r.log).not.toContain('signal.SIGKILL');
      expect(r.log.includes('signal.SIGCONT')).toBe(c.frozen);
      expect(r.log.includes('dest.abort')).toBe(c.prepared);
      // The fill opens beside the Restore (wants only): before the resume it never sweeps, and it ends with the rollback.
      expect(r.log).not.toContain('dest.fill-sweep');
      expect(r.log).not.toContain('dest.fill-done');
      if (c.phase !== 'negotiate') expect(r.journaled.at(-1)).toMatchObject({ state: 'done', outcome: 'rolled-back' });
    });
  }

  it('--restore lazy to a dest without lazy-restore fails in negotiate with RESTORE_MODE_UNSUPPORTED, nothing touched', async () => {
    const r = await runLazy({ lazyDest: false, options: { restore: 'lazy' } });
    expect(r.error?.key).toBe('RESTORE_MODE_UNSUPPORTED');
    expect(r.error?.phase).toBe('negotiate');
    expect(r.error?.sourceState).toBe('running');
    expect(r.log.filter((x) => !x.startsWith('task.') && x !== 'dest.close')).toEqual([]);
  });

  it('auto to a dest without lazy-restore, or --restore eager to one with it: eager, with the read-back beside the restore and no fill', async () => {
    for (const o of [{ lazyDest: false }, { lazyDest: true, options: { restore: 'eager' } }]) {
      const r = await runLazy(o);
      expect(r.error).toBeUndefined();
      expect(r.restoreRequest()!.mode).toBe('RESTORE_MODE_EAGER');
      expect(r.restoreRequest()!.pages[0]!.unconfirmed).toBeUndefined();
      expect(r.summary).toMatchObject({ restoreMode: 'eager', fillMs: 0, confirmedPages: 0 });
      // The check of every dumped page runs beside the restore, before the Commit; the original dies at the commit.
      expect(r.log.filter((x) => x.startsWith('read'))).toEqual([`read ${HELD}+2`, `read 0+${PAGES}`]);
      expect(r.log.lastIndexOf(`read 0+${PAGES}`)).toBeLessThan(at(r.log, 'dest.commit'));
      expect(r.log.some((x) => x.startsWith('dest.fill'))).toBe(false);
      expect(r.log).not.toContain('journal.manifests');
      expect(at(r.log, 'journal.committed')).toBeLessThan(at(r.log, 'signal.SIGKILL'));
    }
  });
});

describe('post-copy: the source side (issue 12)', () => {
  it('--post-copy always switches after round 0: the final delta reads no lazy page, the pages the dest lacks go remote, the fill sends them', async () => {
    const r = await runLazy({ options: { postCopy: 'always' } });
    expect(r.error).toBeUndefined();
    const decision = r.events.find((e) => e.kind === 'decision');
    expect(decision).toMatchObject({ action: 'postcopy', rule: 'postcopy-always' });
    // Nothing read inside the freeze: the only read is the fill's, after the Commit.
    const reads = r.log.filter((x) => x.startsWith('read'));
    expect(reads).toEqual(['read 0+6']);
    expect(r.log.indexOf('read 0+6')).toBeGreaterThan(at(r.log, 'dest.commit'));
    expect(r.finalDeltaPages()).toBe(0);
    const req = r.restoreRequest()!;
    expect(req.mode).toBe('RESTORE_MODE_LAZY');
    // 0..3 held (unconfirmed), 4 and 5 remote (unconfirmed too, zero hash).
    expect([...req.pages[0]!.unconfirmed!]).toEqual([0b11_1111]);
    expect([...req.pages[0]!.remote!]).toEqual([0b11_0000]);
    expect(req.pages[0]!.hashes.subarray(4 * 16).equals(Buffer.alloc(32))).toBe(true);
    // The journal's manifests keep the remote bits for a resolver.
    expect([...r.savedManifests[0]![0]!.remote]).toEqual([0b11_0000]);
    // One request: the two remote pages with bytes, the four held ones confirmed.
    expect(r.answers).toEqual(['0+6 bytes[4,5]']);
    expect(r.summary).toMatchObject({
      postCopy: 'always',
      postCopied: true,
      remotePages: 2,
      precopyBytes: HELD * PAGE,
      downtimeBytes: 20, // no page in the freeze, the images' 20 bytes
      postcopyBytes: 2 * PAGE,
      confirmedPages: HELD,
      replacedPages: 0,
      faultWaitP50Us: 40,
      faultWaitP99Us: 900,
    });
  });

  it('--post-copy auto switches before round 1 is sent when its dirty set is most of round 0 and misses the budget', async () => {
    // 3 of the 4 pages round 0 sent are dirty again; at the fake's rate they would take far over 1 ms.
    const r = await runLazy({ dirtyAfterRound0: 3, options: { postCopy: 'auto', maxDowntimeMs: 1 } });
    expect(r.error).toBeUndefined();
    const decision = r.events.find((e) => e.kind === 'decision' && e.action === 'postcopy');
    expect(decision).toMatchObject({ rule: 'postcopy-early', remainingBytes: 3 * PAGE });
    expect(r.summary).toMatchObject({ postCopied: true, rounds: [expect.objectContaining({ round: 0 })] });
    expect(r.summary!.rounds).toHaveLength(1);
    expect(r.summary!.decision).toMatch(/^switching to post-copy before round 1: its dirty set .* is 75 % of what round 0 sent/);
  });

  it('--post-copy auto keeps pre-copy going when the dirty set after round 0 is half of it or less', async () => {
    const r = await runLazy({ dirtyAfterRound0: 2, options: { postCopy: 'auto', maxDowntimeMs: 1 } });
    expect(r.error).toBeUndefined();
    expect(r.events.some((e) => e.kind === 'decision' && e.rule === 'postcopy-early')).toBe(false);
  });

  it('--post-copy auto on a converging task freezes as usual: nothing remote, nothing post-copied', async () => {
    const r = await runLazy({ options: { postCopy: 'auto' } });
    expect(r.error).toBeUndefined();
    expect(r.restoreRequest()!.pages[0]!.remote).toBeUndefined();
    expect(r.summary).toMatchObject({ postCopy: 'auto', postCopied: false, remotePages: 0, postcopyBytes: 0 });
  });

  it('post-copy to a dest that cannot restore lazily: POSTCOPY_UNSUPPORTED in negotiate, nothing touched', async () => {
    const r = await runLazy({ lazyDest: false, options: { postCopy: 'auto' } });
    expect(r.error?.key).toBe('POSTCOPY_UNSUPPORTED');
    expect(r.error?.phase).toBe('negotiate');
    expect(r.error?.sourceState).toBe('running');
    expect(r.log.filter((x) => !x.startsWith('task.') && x !== 'dest.close')).toEqual([]);
  });

  it('the original gone during the fill: ORIGINAL_LOST naming the copy on the dest, nothing thawed or killed, journaled as ended', async () => {
    const r = await runLazy({ options: { postCopy: 'always' }, originalGone: true });
    expect(r.error?.key).toBe('ORIGINAL_LOST');
    expect(r.error?.sourceState).toBe('gone');
    expect(r.error?.phase).toBe('fill');
    expect(r.error?.message).toContain('(pid 777)');
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('dest.abort');
    expect(r.journaled.at(-1)).toMatchObject({ state: 'done', outcome: 'original-lost', code: 'FERRY-7006' });
  });

  it('the original\'s pid taken by another process during the fill: ORIGINAL_LOST, never a byte of that process sent', async () => {
    const r = await runLazy({ options: { postCopy: 'always' }, pidReused: true });
    expect(r.error?.key).toBe('ORIGINAL_LOST');
    expect(r.log.filter((x) => x.startsWith('read'))).toEqual([]);
    expect(r.fillRequests.every((q) => q.data.length === 0)).toBe(true);
    expect(r.log).not.toContain('signal.SIGKILL');
  });
});
