/**
 * A fake world for the source's state machine: a SourceHost and a DestPort that record every effect, in
 * order, and fail where told (test/unit/migration-state-machine.test.ts drives a migration through it).
 */
import { TCP_ESTABLISHED_FEATURE } from '../../shared/criu/criu-features.js';
import { quietPreflightFacts } from './fake-preflight-facts.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodePagemap, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import type * as m from '../../shared/transport/messages.js';
import { hashPages } from '../../shared/native/addon.js';
import { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { batchPageCount, PAGE_KIND_DATA, writePageNumber } from '../../shared/transport/page-batch.js';
import type { DestPort, FillCallHandlers, MigrationPorts, PageStream, SourceHost } from '../../source-agent/migration/ports.js';
import type { FillManifest } from '../../source-agent/migration/fill-manifests.js';
import type { DirtyTracker } from '../../source-agent/trackers/tracker.js';
import type { TaskNetwork } from '../../shared/kernel/task-network.js';
import { TASK_NETWORK_FEATURE } from '../../shared/peer-info.js';

export const PAGE = 4096;
/** Where the world fails, when told. */
export type Failure =
  | 'connect'
  | 'negotiate'
  | 'prepare'
  | 'precopy'
  | 'dump'
  | 'final-delta'
  | 'upload'
  | 'restore'
  | 'manifests'
  | 'disarm'
  | 'commit-unanswered'
  | 'commit-undelivered'
  | 'commit-rejected'
  | 'commit-epoch-mismatch'
  | 'journal'
  | 'hold';

/** A failure before the resume on the dest, where it lands, and what the rollback must undo. */
export interface RollbackCase {
  fail: Failure;
  phase: string;
  frozen: boolean;
  prepared: boolean;
}

/** Every failure before the dest resumes its copy: each must leave the original running, never killed. */
export const ROLLBACK_CASES: readonly RollbackCase[] = [
  { fail: 'connect', phase: 'negotiate', frozen: false, prepared: false },
  { fail: 'negotiate', phase: 'negotiate', frozen: false, prepared: false },
  // A Prepare that failed may still open the session later: the rollback aborts it all the same.
  { fail: 'prepare', phase: 'prepare', frozen: false, prepared: true },
  { fail: 'precopy', phase: 'precopy', frozen: false, prepared: true },
  { fail: 'dump', phase: 'freeze', frozen: true, prepared: true },
  { fail: 'final-delta', phase: 'final-delta', frozen: true, prepared: true },
  { fail: 'upload', phase: 'final-delta', frozen: true, prepared: true },
  { fail: 'restore', phase: 'restore', frozen: true, prepared: true },
  { fail: 'disarm', phase: 'commit', frozen: true, prepared: true },
  { fail: 'commit-rejected', phase: 'commit', frozen: true, prepared: true },
  // The dest answered that it holds no session of this epoch: it resumed nothing of ours, so thawing is safe.
  { fail: 'commit-epoch-mismatch', phase: 'commit', frozen: true, prepared: true },
  // The dest was unreachable at every attempt: no Commit left this host, so nothing resumed there.
  { fail: 'commit-undelivered', phase: 'commit', frozen: true, prepared: true },
];

/**
 * The dest's side of the Fill calls, as scripted: each call (the last entry repeats) ends 'done' once every
 * unconfirmed page of the Restore's manifests (and every wanted one) was answered, 'failed' (FILL_FAILED: the
 * dest's pager died) or 'drop' (the call breaks) right after the first request, or never ('hang': it takes
 * every request and says nothing, the stream open). `wants` are sent on the first
 * request of each call; `doneDelayMs` holds the done back (a fill that takes time).
 */
export interface FillScript {
  calls: ('done' | 'failed' | 'drop' | 'hang')[];
  wants?: m.FillWanted[];
  doneDelayMs?: number;
}

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

/** The ifindex of the task's outer veth end, as the fake host reads it at the freeze. */
export const FAKE_OUTER_IFINDEX = 31;

/** A world of fakes that records every effect, in order, and fails where told. */
/** `tcpConnected`: the tree holds a connected TCP socket (the dump is --tcp-established, the dest offers it). */
/** `taskNetwork`: the task has its own network namespace (`ferry run --net`), as Negotiate reads it; `freezeTaskNetwork`: what the freeze reads instead ('none': no namespace of its own). */
export function world(
  fail?: Failure,
  opts: { abortDuringPrecopy?: AbortController; lazyDest?: boolean; fill?: FillScript; tcpConnected?: boolean; taskNetwork?: TaskNetwork; freezeTaskNetwork?: TaskNetwork | 'none' } = {},
) {
  const log: string[] = [];
  const destPeer: m.PeerInfo = {
    ...peer,
    features: [...peer.features, ...(opts.lazyDest ? ['lazy-restore'] : []), ...(opts.tcpConnected ? [TCP_ESTABLISHED_FEATURE] : []), ...(opts.taskNetwork ? [TASK_NETWORK_FEATURE] : [])],
  };
  let restoreRequest: m.RestoreRequest | undefined;
  const fillRequests: m.FillRequest[] = [];
  const savedManifests: FillManifest[][] = [];
  let fillCalls = 0;
  const journaled: Record<string, unknown>[] = [];
  const boom = (where: Failure): void => {
    if (fail === where) throw new FerryError('INTERNAL', { message: `fake failure at ${where}` });
  };
  const host: SourceHost = {
    pageSize: PAGE,
    inspectTarget: (pid) => ({ rootPid: pid, name: 'fake', pidNamespaceRoot: true, tasks: [], residentBytes: 2 * PAGE, vmas: 30 }),
    lockTask: () => {
      log.push('task.lock');
      return { release: () => log.push('task.unlock') };
    },
    tree: () => [{ hostPid: 4242, nsPid: 1 }],
    peerInfo: () => Promise.resolve(peer),
    requireCriu: () => Promise.resolve('/fake/criu'),
    criuNeeds: () => ({ fileLocks: [], tcpConnections: opts.tcpConnected ? [{ pid: 4242, local: '0100007F:1F90', remote: '0100007F:A000', state: 'ESTABLISHED' }] : [] }),
    mountNamespace: () => undefined,
    networkLock: () => Promise.resolve('nftables' as const),
    tcpDumpLock: (rootPid, dumpLog) => ({ dumpLog, netns: `/proc/${rootPid}/ns/net` }),
    tcpDumpUndoCommand: (_pids, lock, hold) => ['ferry-tcp-undo', ...(lock ? ['lock'] : []), ...(hold ? ['hold'] : [])],
    taskNetwork: () => {
      const read = opts.freezeTaskNetwork === 'none' ? undefined : (opts.freezeTaskNetwork ?? opts.taskNetwork);
      return read ? { network: read, outerIfindex: FAKE_OUTER_IFINDEX } : undefined;
    },
    holdTaskNetwork: (hold) => {
      log.push(`net.hold ${hold.netns}`);
      if (fail === 'hold') throw new Error('netlink NEWTABLE/NEWCHAIN: EPERM');
    },
    releaseTaskNetworkHold: (hold) => {
      log.push(`net.release ${hold.netns}`);
      return Promise.resolve({ released: ['inet ferry-hold', 'arp ferry-hold'], announced: hold.network.addresses.map((a) => a.split('/')[0]!), errors: [] });
    },
    deleteOuterLink: (name, ifindex) => {
      log.push(`net.del-outer ${name} ${ifindex}`);
      return 'gone';
    },
    undoTcpDump: () => {
      log.push('tcp.undo');
      return { released: ['pid 4242 fd 3'], errors: [] };
    },
    dropTcpDumpLock: () => {
      log.push('tcp.drop-lock');
      return Promise.resolve({ released: [], errors: [] });
    },
    preflightFacts: () => {
      const facts = quietPreflightFacts();
      return { ...facts, tree: { ...facts.tree, taskNetwork: opts.taskNetwork } };
    },
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
        waitForDump: () => log.push('lease.wait-for-dump'),
        runBeforeThaw: (argv: readonly string[]) => log.push(`lease.before-thaw ${argv.length > 0 ? 'set' : 'cleared'}`),
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
    dump: async ({ imagesDir, onCriuStarted }) => {
      log.push('dump');
      onCriuStarted?.(99);
      boom('dump');
      // A real-format image set: one task, two present pages (0x1000 changed since pre-copy, 0x2000 new).
      const pagemap = encodePagemap({ pagesId: 1, entries: [{ vaddr: 0x1000n * 4096n, nrPages: 2, flags: PE_PRESENT }] });
      await writeFile(join(imagesDir, 'pagemap-1.img'), pagemap);
      await writeFile(join(imagesDir, 'pages-1.img'), Buffer.concat([Buffer.alloc(PAGE, 9), Buffer.alloc(PAGE, 7)]));
      await writeFile(join(imagesDir, 'pstree.img'), Buffer.alloc(10));
      await writeFile(join(imagesDir, 'inventory.img'), Buffer.alloc(10));
      return 'full' as const;
    },
    startTime: () => 1,
    readPages: () => {
      throw new Error('a full dump needs no reads from the task');
    },
    signalTree: (_pid, sig) => log.push(`signal.${sig}`),
    waitExited: () => {
      log.push('wait-exited');
      return Promise.resolve([]);
    },
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
  /** The epoch of every Dest call, in order: one migration must use one epoch throughout. */
  const epochs: string[] = [];
  const dest: DestPort = {
    negotiate: () => {
      boom('negotiate');
      return Promise.resolve({ dest: destPeer, protocolVersion: 1, ...(opts.taskNetwork ? { taskNetwork: { bridge: opts.taskNetwork.bridge, bridgeProblem: '', taken: [] } } : {}) });
    },
    prepare: (req) => {
      epochs.push(req.epoch);
      log.push('dest.prepare');
      boom('prepare');
      return Promise.resolve({ workDir: '/x', freeBytes: '1' });
    },
    openPageStream: (o) => {
      epochs.push(o.epoch);
      phaseNow = o.phase;
      return stream;
    },
    uploadImages: (_dir, ids) => {
      epochs.push(ids.epoch);
      log.push('dest.upload');
      boom('upload');
      return Promise.resolve({ files: 2, bytes: 20 });
    },
    restore: (req) => {
      epochs.push(req.epoch);
      restoreRequest = req;
      log.push(`dest.restore(${req.pages.map((p) => p.pagemapImage).join()})`);
      boom('restore');
      return Promise.resolve({ restoredPid: 777, rebuildUs: '1000', restoreUs: '2000', pagesFromStore: '2', bytesWritten: '8192' });
    },
    commit: (req) => {
      epochs.push(req.epoch);
      log.push('dest.commit');
      if (fail === 'commit-unanswered') return Promise.reject(new FerryError('DEST_UNREACHABLE'));
      if (fail === 'commit-rejected') return Promise.reject(new FerryError('COMMIT_REJECTED'));
      if (fail === 'commit-epoch-mismatch') return Promise.reject(new FerryError('SESSION_EPOCH_MISMATCH'));
      return Promise.resolve({ restoredPid: 777, resumedAtUnixUs: '1' });
    },
    abort: (req) => {
      epochs.push(req.epoch);
      log.push('dest.abort');
      return Promise.resolve({ existed: true, alreadyCommitted: false, killedRestoredCopy: false });
    },
    fill: (h: FillCallHandlers) => fakeFill(h),
    reachable: () => Promise.resolve(fail !== 'commit-undelivered'),
    close: () => log.push('dest.close'),
  };
  const ports: MigrationPorts = {
    host,
    beginJournal: (_dir, migrationId, started) => {
      log.push('journal.started');
      boom('journal');
      journaled.push({ state: 'started', migrationId, ...started });
      return Promise.resolve({
        record: (state, fields) => {
          log.push(`journal.${state}`);
          journaled.push({ state, ...fields });
          return Promise.resolve();
        },
        saveFillManifests: (manifests) => {
          log.push('journal.manifests');
          if (fail === 'manifests') return Promise.reject(new FerryError('INTERNAL', { message: 'fake failure at manifests' }));
          savedManifests.push([...manifests]);
          return Promise.resolve();
        },
        close: () => Promise.resolve(),
      });
    },
    connectDest: () => {
      boom('connect');
      return Promise.resolve(dest);
    },
  };
  /** The dest's end of one Fill call: events are delivered inside write(), so the order is deterministic. */
  function fakeFill(h: FillCallHandlers) {
    const script = opts.fill ?? { calls: ['done'] };
    const mode = script.calls[Math.min(fillCalls, script.calls.length - 1)]!;
    fillCalls++;
    log.push(`dest.fill(${mode})`);
    const needed = new Set<string>();
    for (const p of restoreRequest?.pages ?? []) {
      const bits = p.unconfirmed ?? Buffer.alloc(0);
      for (let i = 0; i < bits.length * 8; i++) if ((bits[i >> 3]! & (1 << (i & 7))) !== 0) needed.add(`${p.task}:${i}`);
    }
    for (const w of script.wants ?? []) for (let i = 0; i < w.count; i++) needed.add(`${w.task}:${Number(w.firstIndex) + i}`);
    let over = false;
    let first = true;
    const end = (error: FerryError | undefined): void => {
      if (over) return;
      over = true;
      setImmediate(() => h.end(error));
    };
    const sendDone = (): void => {
      const done = { filledPages: '3', faults: '2', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '1000', faultsWaited: '1', waitP50Us: '40', waitP99Us: '900' };
      const deliver = (): void => {
        if (over) return;
        log.push('dest.fill-done');
        h.event({ done });
        end(undefined);
      };
      if (script.doneDelayMs) setTimeout(deliver, script.doneDelayMs);
      else deliver();
    };
    return {
      write: (req: m.FillRequest) => {
        if (over) return Promise.reject(new FerryError('DEST_UNREACHABLE', { detail: 'the fake Fill call has ended' }));
        fillRequests.push(req);
        if (first) {
          first = false;
          if (mode === 'failed') end(new FerryError('FILL_FAILED', { side: 'dest', detail: 'the pager died' }));
          else if (mode === 'drop') end(new FerryError('DEST_UNREACHABLE', { detail: 'the fake dropped the call' }));
          else for (const w of script.wants ?? []) h.event({ wanted: w });
        } else {
          // The first answer of the sweep (not a want) marks where the sweep began.
          const wanted = (script.wants ?? []).some((w) => w.task === req.task && Number(w.firstIndex) <= Number(req.firstIndex) && Number(req.firstIndex) < Number(w.firstIndex) + w.count);
          if (!wanted && !log.includes('dest.fill-sweep')) log.push('dest.fill-sweep');
          for (let i = 0; i < req.count; i++) needed.delete(`${req.task}:${Number(req.firstIndex) + i}`);
        }
        if (mode === 'done' && needed.size === 0 && !over) sendDone();
        return Promise.resolve();
      },
      end: () => log.push('dest.fill-end'),
      cancel: () => end(new FerryError('CANCELLED')),
    };
  }
  return { log, ports, finalDeltaPages: () => finalDeltaPages, epochs, journaled, fillRequests, savedManifests, restoreRequest: () => restoreRequest };
}

