/**
 * The migration state machine against fakes of the source host and the dest: a failure in every phase must
 * leave exactly one runnable copy (the original, thawed if it was frozen), remove the dest session, and
 * never kill the original; a commit that goes unanswered must leave the original frozen, neither thawed nor
 * killed. The real kernel/CRIU/gRPC path is covered by test/e2e; this covers every branch cheaply.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePagemap, PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { silentLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import { hashPages } from '../../shared/native/addon.js';
import { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { batchPageCount, PAGE_KIND_DATA, writePageNumber } from '../../shared/transport/page-batch.js';
import type { MigrationEvent } from '../../source-agent/migration/events.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import { compileMigrateOptions } from '../../source-agent/config/migrate-options.js';
import type { DestPort, MigrationPorts, PageStream, SourceHost } from '../../source-agent/migration/ports.js';
import type { DirtyTracker } from '../../source-agent/trackers/tracker.js';

const PAGE = 4096;
type Failure = 'connect' | 'negotiate' | 'prepare' | 'precopy' | 'dump' | 'final-delta' | 'upload' | 'restore' | 'disarm' | 'commit-unanswered' | 'commit-rejected';

const peer: m.PeerInfo = {
  ferryVersion: 't',
  protocolVersions: [1],
  pageSize: PAGE,
  arch: process.arch,
  kernel: 'k',
  hostname: 'h',
  trackers: ['hash'],
  criuVersion: '4.2.1',
  criuProblem: '',
  features: ['page-hash-xxh3-128', 'zero-page-flag'],
};

function onePage(page: number, fill: number) {
  const data = Buffer.alloc(PAGE, fill);
  const hashes = Buffer.alloc(16);
  hashPages(data, 1, PAGE, hashes);
  const pageNumbers = Buffer.alloc(8);
  writePageNumber(pageNumbers, 0, page);
  return { pageNumbers, hashes, kinds: Buffer.from([PAGE_KIND_DATA]), data };
}

/** A world of fakes that records every effect, in order, and fails where told. */
function world(fail?: Failure, opts: { abortDuringPrecopy?: AbortController } = {}) {
  const log: string[] = [];
  const boom = (where: Failure): void => {
    if (fail === where) throw new FerryError('INTERNAL', { message: `fake failure at ${where}` });
  };
  const host: SourceHost = {
    pageSize: PAGE,
    inspectTarget: (pid) => ({ rootPid: pid, name: 'fake', pidNamespaceRoot: true, tasks: [], residentBytes: 2 * PAGE }),
    tree: () => [{ hostPid: 4242, nsPid: 1 }],
    peerInfo: () => Promise.resolve(peer),
    requireCriu: () => Promise.resolve('/fake/criu'),
    chooseTracker: () => Promise.resolve({ name: 'hash' as const, note: 'hash tracker (as asked)' }),
    createTracker: (): DirtyTracker => {
      let rounds = 0;
      return {
        name: 'hash',
        round: async (_tasks, held, sink) => {
          const round = rounds++;
          boom('precopy');
          if (round === 0) opts.abortDuringPrecopy?.abort();
          if (round === 0) {
            // Like a real tracker: what it sends is what the dest holds from now on.
            const page = onePage(0x1000, 1);
            await sink(1, page);
            if (!held.has(1)) held.set(1, new PageHashIndex());
            held.get(1)!.set(0x1000, page.hashes, 0);
          }
          // Round 0 sends one page; the next one finds nothing new, so the floor rule freezes.
          return { presentPages: 1, dirtyPages: round === 0 ? 1 : 0, zeroPages: 0, bytesRead: PAGE, readMs: 1, bytesSent: round === 0 ? PAGE : 0, vanishedPages: 0 };
        },
        close: () => log.push('tracker.close'),
      };
    },
    armFreezeLease: () => {
      log.push('lease.arm');
      return {
        disarm: () => {
          log.push('lease.disarm');
          if (fail === 'disarm') return Promise.reject(new FerryError('FREEZE_LEASE_EXPIRED'));
          return Promise.resolve();
        },
        release: () => {
          log.push('lease.release');
          return Promise.resolve();
        },
      };
    },
    dump: async ({ imagesDir }) => {
      log.push('dump');
      boom('dump');
      // A real-format image set: one task, two present pages (0x1000 changed since pre-copy, 0x2000 new).
      const pagemap = encodePagemap({ pagesId: 1, entries: [{ vaddr: 0x1000n * 4096n, nrPages: 2, flags: PE_PRESENT }] });
      await writeFile(join(imagesDir, 'pagemap-1.img'), pagemap);
      await writeFile(join(imagesDir, 'pages-1.img'), Buffer.concat([Buffer.alloc(PAGE, 9), Buffer.alloc(PAGE, 7)]));
      await writeFile(join(imagesDir, 'pstree.img'), Buffer.alloc(10));
      await writeFile(join(imagesDir, 'inventory.img'), Buffer.alloc(10));
      return 'full' as const;
    },
    readPages: () => {
      throw new Error('a full dump needs no reads from the task');
    },
    signalTree: (_pid, sig) => log.push(`signal.${sig}`),
    createThrottle: () => Promise.reject(new Error('this workload converges: no throttle expected')),
  };
  let finalDeltaPages = 0;
  let phaseNow: () => string = () => 'negotiate';
  const stream: PageStream = {
    bytesSent: 0,
    pagesSent: 0,
    storedBytes: 0,
    storeMicros: 0,
    send: (_task, _round, batch) => {
      if (phaseNow() === 'final-delta') {
        boom('final-delta');
        finalDeltaPages += batchPageCount(batch);
      }
      (stream as { pagesSent: number }).pagesSent += batchPageCount(batch);
      return Promise.resolve();
    },
    flush: () => Promise.resolve(),
    finish: () => Promise.resolve(),
    cancel: () => log.push('stream.cancel'),
  };
  const dest: DestPort = {
    negotiate: () => {
      boom('negotiate');
      return Promise.resolve({ dest: peer, protocolVersion: 1 });
    },
    prepare: () => {
      log.push('dest.prepare');
      boom('prepare');
      return Promise.resolve({ workDir: '/x', freeBytes: '1' });
    },
    openPageStream: (o) => {
      phaseNow = o.phase;
      return stream;
    },
    uploadImages: (_dir, _ids) => {
      log.push('dest.upload');
      boom('upload');
      return Promise.resolve({ files: 2, bytes: 20 });
    },
    restore: (req) => {
      log.push(`dest.restore(${req.pages.map((p) => p.pagemapImage).join()})`);
      boom('restore');
      return Promise.resolve({ restoredPid: 777, rebuildUs: '1000', restoreUs: '2000', pagesFromStore: '2', bytesWritten: '8192' });
    },
    commit: () => {
      log.push('dest.commit');
      if (fail === 'commit-unanswered') return Promise.reject(new FerryError('DEST_UNREACHABLE'));
      if (fail === 'commit-rejected') return Promise.reject(new FerryError('COMMIT_REJECTED'));
      return Promise.resolve({ restoredPid: 777, resumedAtUnixUs: '1' });
    },
    abort: () => {
      log.push('dest.abort');
      return Promise.resolve({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    },
    close: () => log.push('dest.close'),
  };
  const ports: MigrationPorts = {
    host,
    connectDest: () => {
      boom('connect');
      return Promise.resolve(dest);
    },
  };
  return { log, ports, finalDeltaPages: () => finalDeltaPages };
}

let imagesRoot: string;
beforeAll(async () => {
  imagesRoot = await mkdtemp(join(tmpdir(), 'ferry-sm-'));
});
afterAll(async () => {
  await rm(imagesRoot, { recursive: true, force: true });
});

async function run(fail?: Failure, controller = new AbortController()) {
  const w = world(fail);
  const events: MigrationEvent[] = [];
  const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1 });
  try {
    const summary = await migrate(opts, { log: silentLogger, emit: (e) => events.push(e), signal: controller.signal, ports: w.ports });
    return { ...w, events, summary, error: undefined };
  } catch (e) {
    return { ...w, events, summary: undefined, error: e as FerryError };
  }
}

describe('migration state machine', () => {
  it('commits in the safe order: restored -> disarm -> commit -> kill the original; never thaws', async () => {
    const r = await run();
    expect(r.error).toBeUndefined();
    const order = ['dest.restore(pagemap-1.img)', 'lease.disarm', 'dest.commit', 'signal.SIGKILL'].map((x) => r.log.indexOf(x));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.log).not.toContain('dest.abort');
    expect(r.summary!.restoredPid).toBe(777);
    expect(r.summary!.dumpPages).toBe(2);
    // Page 0x1000 changed after pre-copy and 0x2000 is new: both go in the final delta, nothing else.
    expect(r.summary!.finalDeltaPages).toBe(2);
    expect(r.events.at(-1)?.kind).toBe('done');
  });

  const cases: { fail: Failure; phase: string; frozen: boolean; prepared: boolean }[] = [
    { fail: 'connect', phase: 'negotiate', frozen: false, prepared: false },
    { fail: 'negotiate', phase: 'negotiate', frozen: false, prepared: false },
    { fail: 'prepare', phase: 'prepare', frozen: false, prepared: false },
    { fail: 'precopy', phase: 'precopy', frozen: false, prepared: true },
    { fail: 'dump', phase: 'freeze', frozen: true, prepared: true },
    { fail: 'final-delta', phase: 'final-delta', frozen: true, prepared: true },
    { fail: 'upload', phase: 'final-delta', frozen: true, prepared: true },
    { fail: 'restore', phase: 'restore', frozen: true, prepared: true },
    { fail: 'disarm', phase: 'commit', frozen: true, prepared: true },
    { fail: 'commit-rejected', phase: 'commit', frozen: true, prepared: true },
  ];
  for (const c of cases) {
    it(`a failure at ${c.fail} rolls back: ${c.frozen ? 'thaws the original, ' : ''}${c.prepared ? 'aborts the dest session, ' : ''}never kills`, async () => {
      const r = await run(c.fail);
      expect(r.error).toBeInstanceOf(FerryError);
      expect(r.error!.phase).toBe(c.phase);
      expect(r.error!.sourceState).toBe('running');
      expect(r.log).not.toContain('signal.SIGKILL');
      expect(r.log.includes('signal.SIGCONT')).toBe(c.frozen);
      expect(r.log.includes('lease.release')).toBe(c.frozen);
      expect(r.log.includes('dest.abort')).toBe(c.prepared);
      if (c.frozen) expect(r.log.indexOf('lease.release')).toBeLessThan(r.log.indexOf('signal.SIGCONT'));
      expect(r.events.at(-1)?.kind).toBe('failed');
    });
  }

  it('an unanswered commit leaves the original frozen: not thawed, not killed, state reported as frozen', async () => {
    const r = await run('commit-unanswered');
    expect(r.error?.key).toBe('COMMIT_UNCONFIRMED');
    expect(r.error?.sourceState).toBe('frozen');
    expect(r.log.filter((x) => x === 'dest.commit').length).toBeGreaterThan(1); // retried: Commit is idempotent
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('dest.abort');
  }, 15_000);

  it('an abort signal (Ctrl-C) during pre-copy rolls back and reports CANCELLED', async () => {
    const controller = new AbortController();
    const w = world(undefined, { abortDuringPrecopy: controller });
    const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1 });
    const err = await migrate(opts, { log: silentLogger, emit: () => undefined, signal: controller.signal, ports: w.ports }).catch((e: unknown) => e as FerryError);
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).key).toBe('CANCELLED');
    expect(w.log).toContain('dest.abort');
    expect(w.log).not.toContain('signal.SIGKILL');
    expect(w.log).not.toContain('dump');
  });
});

describe('a lazy dump with an exact tracker', () => {
  /**
   * The tracker says nothing changed since round 0, so the final delta takes page 0x1000 as the dest holds it;
   * the read-back beside the restore finds the task's page differs (a missed write) and the migration rolls back.
   */
  async function runLazy(taskFill: number) {
    const w = world();
    const tracker = w.ports.host.createTracker('uffd-wp');
    const lazyHost: SourceHost = {
      ...w.ports.host,
      createTracker: () => ({ ...tracker, name: 'uffd-wp', changedSinceLastRound: () => new Map([[1, { starts: [], counts: [] }]]) }),
      dump: async ({ imagesDir }) => {
        w.log.push('dump');
        await writeFile(join(imagesDir, 'pagemap-1.img'), encodePagemap({ pagesId: 1, entries: [{ vaddr: 0x1000n * 4096n, nrPages: 1, flags: PE_LAZY }] }));
        await writeFile(join(imagesDir, 'pstree.img'), Buffer.alloc(10));
        await writeFile(join(imagesDir, 'inventory.img'), Buffer.alloc(10));
        return 'lazy' as const;
      },
      readPages: (_pid, first, count) => {
        w.log.push(`read ${first}+${count}`);
        const pages = new Float64Array(count).map((_, i) => first + i);
        return [{ data: Buffer.alloc(count * PAGE, taskFill), pages, unreadable: [] }];
      },
    };
    const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1 });
    const ports: MigrationPorts = { ...w.ports, host: lazyHost };
    const result = await migrate(opts, { log: silentLogger, emit: () => undefined, signal: new AbortController().signal, ports }).then(
      (summary) => ({ summary, error: undefined }),
      (e: unknown) => ({ summary: undefined, error: e as FerryError }),
    );
    return { ...result, log: w.log };
  }

  it('reads no unchanged page during the freeze, and commits when the read-back agrees', async () => {
    const r = await runLazy(1); // round 0 sent the page with fill 1: unchanged
    expect(r.error).toBeUndefined();
    expect(r.summary!.finalDeltaTaskPages).toBe(0);
    expect(r.summary!.finalDeltaPages).toBe(0);
    // The only read of the task after the dump is the check beside the restore, and it comes after Restore started.
    expect(r.log.filter((x) => x.startsWith('read'))).toEqual(['read 4096+1']);
  });

  it('rolls back with TRACKER_MISSED_PAGE when the task holds a write the tracker did not report', async () => {
    const r = await runLazy(9);
    expect(r.error?.key).toBe('TRACKER_MISSED_PAGE');
    expect(r.error?.sourceState).toBe('running');
    expect(r.log).toContain('dest.abort');
    expect(r.log).toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('dest.commit');
  });
});
