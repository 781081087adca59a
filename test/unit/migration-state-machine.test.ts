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
import { encodePagemap, PE_LAZY } from '../../shared/criu/pagemap-image.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { silentLogger } from '../../shared/logging/logger.js';
import type { MigrationEvent } from '../../source-agent/migration/events.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import { compileMigrateOptions } from '../../source-agent/config/migrate-options.js';
import type { MigrationPorts, SourceHost } from '../../source-agent/migration/ports.js';
import { FAKE_OUTER_IFINDEX, PAGE, ROLLBACK_CASES, world, type Failure } from '../fakes/fake-migration-world.js';

let imagesRoot: string;
beforeAll(async () => {
  imagesRoot = await mkdtemp(join(tmpdir(), 'ferry-sm-'));
});
afterAll(async () => {
  await rm(imagesRoot, { recursive: true, force: true });
});

const TASK_NETWORK = { innerLink: 'eth0', mac: '02:77:00:00:00:64', addresses: ['10.77.0.100/24'], outerLink: 'fy0123abcd', bridge: 'ferry0' };

async function run(fail?: Failure, controller = new AbortController(), tcpConnected = false, taskNetwork?: typeof TASK_NETWORK, freezeTaskNetwork?: typeof TASK_NETWORK | 'none') {
  const w = world(fail, { tcpConnected, ...(taskNetwork ? { taskNetwork } : {}), ...(freezeTaskNetwork ? { freezeTaskNetwork } : {}) });
  const events: MigrationEvent[] = [];
  const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1, commitPatienceMs: 1_500, undeliveredPatienceMs: 300 });
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
    expect(r.log.at(-1)).toBe('task.unlock');
  });

  it('journals every decision before acting on it: committing after the disarm and before Commit, committed before the kill (issue 10)', async () => {
    const r = await run();
    const at = (x: string): number => r.log.indexOf(x);
    expect(r.log.filter((x) => x.startsWith('journal.'))).toEqual(['journal.started', 'journal.frozen', 'journal.restored', 'journal.committing', 'journal.committed', 'journal.done']);
    expect(at('journal.started')).toBeLessThan(at('dest.prepare'));
    expect(at('journal.frozen')).toBeLessThan(at('dump'));
    expect(at('lease.disarm')).toBeLessThan(at('journal.committing'));
    expect(at('journal.committing')).toBeLessThan(at('dest.commit'));
    expect(at('dest.commit')).toBeLessThan(at('journal.committed'));
    expect(at('journal.committed')).toBeLessThan(at('signal.SIGKILL'));
    expect(r.journaled[0]).toMatchObject({ state: 'started', pid: 4242, to: '127.0.0.1:1', epoch: r.epochs[0] });
    expect(r.journaled.at(-1)).toMatchObject({ state: 'done', outcome: 'migrated' });
  });

  it('draws a random 64-bit epoch per migration and sends it on every Dest call (issue 9)', async () => {
    const a = await run();
    const b = await run();
    for (const r of [a, b]) {
      expect(r.epochs.length).toBeGreaterThanOrEqual(5); // prepare, stream, upload, restore, commit
      expect(new Set(r.epochs).size).toBe(1);
      const e = BigInt(r.epochs[0]!);
      expect(e > 0n && e < 2n ** 64n).toBe(true);
    }
    expect(a.epochs[0]).not.toBe(b.epochs[0]);
    expect(a.epochs[0]).not.toBe('1');
  });

  const cases = ROLLBACK_CASES;
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
      // One migration per task: the lock was taken once, and let go last; the dest and the preflight are asked
      // before it is taken, so a failure talking to the dest never took it.
      const beforeLock = c.fail === 'connect' || c.fail === 'negotiate';
      expect(r.log.filter((x) => x === 'task.lock')).toHaveLength(beforeLock ? 0 : 1);
      if (!beforeLock) expect(r.log.at(-1)).toBe('task.unlock');
      if (c.phase !== 'negotiate') expect(r.journaled.at(-1)).toMatchObject({ state: 'done', outcome: 'rolled-back', code: r.error!.code });
    });
  }

  describe('a --tcp-established dump (issue 13, item 2)', () => {
    for (const c of cases.filter((x) => x.frozen)) {
      it(`a failure at ${c.fail}: the sockets leave repair and the lock goes before the thaw; the journal names the lock`, async () => {
        const r = await run(c.fail, undefined, true);
        expect(r.error!.sourceState).toBe('running');
        expect(r.error!.rollbackErrors).toEqual([]);
        const at = (x: string): number => r.log.indexOf(x);
        expect(at('tcp.undo')).toBeGreaterThan(-1);
        expect(at('tcp.undo')).toBeLessThan(at('lease.release'));
        expect(at('tcp.undo')).toBeLessThan(at('signal.SIGCONT'));
        expect(r.log).not.toContain('tcp.drop-lock');
        // The guard was handed the undo (for a death of this process) and told to forget it before the thaw.
        expect(at('lease.before-thaw set')).toBeLessThan(at('lease.release'));
        expect(r.journaled.find((e) => e.state === 'frozen')).toMatchObject({ tcpLock: { dumpLog: expect.stringMatching(/dump/), netns: '/proc/4242/ns/net' } });
      });
    }

    it('a commit: nothing resumes the original; the lock is deleted after the kill', async () => {
      const r = await run(undefined, undefined, true);
      expect(r.error).toBeUndefined();
      expect(r.log).not.toContain('tcp.undo');
      expect(r.log.indexOf('tcp.drop-lock')).toBeGreaterThan(r.log.indexOf('signal.SIGKILL'));
    });

    it('an unanswered commit: the sockets stay in repair and the lock stays (the dest may run the copy)', async () => {
      const r = await run('commit-unanswered', undefined, true);
      expect(r.error?.sourceState).toBe('frozen');
      expect(r.log).not.toContain('tcp.undo');
      expect(r.log).not.toContain('tcp.drop-lock');
    }, 15_000);
  });

  describe('a task in its own network namespace (issue 16, part B)', () => {
    for (const c of cases.filter((x) => x.frozen)) {
      it(`a failure at ${c.fail}: the hold is let go (and the addresses announced) before the tcp undo and the thaw`, async () => {
        const r = await run(c.fail, undefined, true, TASK_NETWORK);
        expect(r.error!.sourceState).toBe('running');
        expect(r.error!.rollbackErrors).toEqual([]);
        const at = (x: string): number => r.log.indexOf(x);
        expect(at('net.hold /proc/4242/ns/net')).toBeGreaterThan(at('journal.frozen'));
        expect(at('net.hold /proc/4242/ns/net')).toBeLessThan(at('dump'));
        expect(at('net.release /proc/4242/ns/net')).toBeGreaterThan(at('dump'));
        expect(at('net.release /proc/4242/ns/net')).toBeLessThan(at('tcp.undo'));
        expect(at('tcp.undo')).toBeLessThan(at('signal.SIGCONT'));
        expect(r.log).not.toContain('net.del-outer fy0123abcd 31');
        expect(r.journaled.find((e) => e.state === 'frozen')).toMatchObject({ hold: { netns: '/proc/4242/ns/net', network: TASK_NETWORK } });
      });
    }

    it('the guard is handed the hold with the tcp undo; the Restore carries the task network', async () => {
      const r = await run(undefined, undefined, true, TASK_NETWORK);
      expect(r.error).toBeUndefined();
      expect(r.log).toContain('lease.before-thaw set');
      expect(r.restoreRequest()?.taskNetwork).toEqual(TASK_NETWORK);
    });

    it('a commit: the hold stays on the original (never let go), its veth is deleted after the kill', async () => {
      const r = await run(undefined, undefined, false, TASK_NETWORK);
      expect(r.error).toBeUndefined();
      expect(r.log.filter((x) => x.startsWith('net.'))).toEqual(['net.hold /proc/4242/ns/net', 'net.del-outer fy0123abcd 31']);
      expect(r.log.indexOf('net.del-outer fy0123abcd 31')).toBeGreaterThan(r.log.indexOf('signal.SIGKILL'));
    });

    it('an unanswered commit: the hold stays and the veth too (the dest may run the copy)', async () => {
      const r = await run('commit-unanswered', undefined, false, TASK_NETWORK);
      expect(r.error?.sourceState).toBe('frozen');
      expect(r.log.filter((x) => x.startsWith('net.'))).toEqual(['net.hold /proc/4242/ns/net']);
    }, 15_000);

    it('a hold that cannot be made: NETWORK_HOLD_FAILED, no dump, the original thawed (what was held let go)', async () => {
      const r = await run('hold', undefined, true, TASK_NETWORK);
      expect(r.error?.key).toBe('NETWORK_HOLD_FAILED');
      expect(r.error?.phase).toBe('freeze');
      expect(r.error?.sourceState).toBe('running');
      expect(r.log).not.toContain('dump');
      const at = (x: string): number => r.log.indexOf(x);
      expect(at('net.release /proc/4242/ns/net')).toBeGreaterThan(at('net.hold /proc/4242/ns/net'));
      expect(at('net.release /proc/4242/ns/net')).toBeLessThan(at('signal.SIGCONT'));
    });

    it('the freeze journals the outer end\'s ifindex with the hold; the commit deletes the veth by name and that ifindex', async () => {
      const r = await run(undefined, undefined, false, TASK_NETWORK);
      expect(r.journaled.find((e) => e.state === 'frozen')).toMatchObject({ hold: { network: TASK_NETWORK }, outerIfindex: FAKE_OUTER_IFINDEX });
      expect(r.log).toContain(`net.del-outer fy0123abcd ${FAKE_OUTER_IFINDEX}`);
    });

    const changes: [string, typeof TASK_NETWORK | 'none'][] = [
      ['an address changed', { ...TASK_NETWORK, addresses: ['10.77.0.101/24'] }],
      ['an address added', { ...TASK_NETWORK, addresses: ['10.77.0.100/24', '10.77.0.102/24'] }],
      ['the outer end renamed', { ...TASK_NETWORK, outerLink: 'fy99' }],
      ['no network of its own any more', 'none'],
    ];
    for (const [what, atFreeze] of changes) {
      it(`the network read at the freeze differs from Negotiate's (${what}): TASK_NETWORK_CHANGED, before the hold and the dump`, async () => {
        const r = await run(undefined, undefined, true, TASK_NETWORK, atFreeze);
        expect(r.error?.key).toBe('TASK_NETWORK_CHANGED');
        expect(r.error?.phase).toBe('freeze');
        expect(r.error?.sourceState).toBe('running');
        for (const x of ['net.hold /proc/4242/ns/net', 'dump', 'journal.frozen', 'signal.SIGKILL']) expect(r.log).not.toContain(x);
        expect(r.journaled.find((e) => e.state === 'frozen')).toBeUndefined();
      });
    }

    it('the same network at the freeze, its addresses in another order: no refusal', async () => {
      const two = { ...TASK_NETWORK, addresses: ['10.77.0.100/24', 'fd77::100/64'] };
      const r = await run(undefined, undefined, false, two, { ...two, addresses: ['fd77::100/64', '10.77.0.100/24'] });
      expect(r.error).toBeUndefined();
    });

    it('a task that shares the agent network namespace is never held', async () => {
      const r = await run();
      expect(r.log.filter((x) => x.startsWith('net.'))).toEqual([]);
      expect(r.restoreRequest()?.taskNetwork).toBeNull();
    });
  });

  it('an unanswered commit leaves the original frozen: not thawed, not killed, state reported as frozen', async () => {
    const r = await run('commit-unanswered');
    expect(r.error?.key).toBe('COMMIT_UNCONFIRMED');
    expect(r.error?.sourceState).toBe('frozen');
    expect(r.log.filter((x) => x === 'dest.commit').length).toBeGreaterThan(1); // retried: Commit is idempotent
    expect(r.log).not.toContain('signal.SIGCONT');
    expect(r.log).not.toContain('signal.SIGKILL');
    expect(r.log).not.toContain('dest.abort');
    // The journal stays at "committing": --resume (or the daemon) must ask the dest.
    expect(r.journaled.at(-1)).toMatchObject({ state: 'committing' });
    expect(r.error?.detail).toContain(`--resume ${String(r.journaled[0]!.migrationId)}`);
  }, 15_000);

  it('--compress zstd to a dest that accepts no codec is refused in negotiate, nothing touched (issue 15)', async () => {
    const w = world();
    const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1, compress: 'zstd' });
    const err = await migrate(opts, { log: silentLogger, emit: () => undefined, signal: new AbortController().signal, ports: w.ports }).catch((e: unknown) => e as FerryError);
    expect((err as FerryError).key).toBe('COMPRESSION_UNAVAILABLE');
    expect((err as FerryError).phase).toBe('negotiate');
    expect(w.log).not.toContain('dest.prepare');
    // auto (the default) just sends uncompressed: the summary says no codec was agreed.
    const ok = await run();
    expect(ok.summary).toMatchObject({ compress: 'auto', pageCodec: 'none' });
    expect(ok.summary!.rounds.every((r) => r.codec === 'none')).toBe(true);
  });

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
