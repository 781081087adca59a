/**
 * What a migration needs from the world, as two ports: the source host (the task, CRIU, signals) and the
 * dest agent. migration.ts only talks to these, so its state machine runs against fakes in unit tests
 * (test/unit/migration-state-machine.test.ts) and against the real kernel, CRIU and gRPC everywhere else.
 */
import { criuDump } from '../../shared/criu/criu-runner.js';
import { requireCriu } from '../../shared/criu/criu-binary.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { waitExited, type ProcessIdentity } from '../../shared/kernel/process-wait.js';
import { signalTree, type TreeSignal } from '../../shared/kernel/signal-tree.js';
import { localPeerInfo } from '../../shared/peer-info.js';
import type { Logger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import type { PageBatch } from '../../shared/transport/page-batch.js';
import type { TransportSecurity } from '../../shared/transport/transport-security.js';
import { DestClient } from '../dest-client.js';
import type { FillCall, FillCallHandlers } from '../fill-call.js';
import { FreezeLease } from '../freeze-lease.js';
import { GrpcPageStream } from '../grpc-page-stream.js';
import type { PageStreamOptions } from '../page-stream-options.js';
import { PageChannelStream } from '../page-channel/page-channel-stream.js';
import { parseHostPort } from '../../shared/transport/address.js';
import { HashTracker } from '../trackers/hash-tracker.js';
import type { DirtyTracker, TrackerChoice, TrackerName } from '../trackers/tracker.js';
import { availableTrackers, chooseTracker } from '../trackers/choose-tracker.js';
import { SoftDirtyTracker } from '../trackers/soft-dirty/soft-dirty-tracker.js';
import { UffdWpTracker } from '../trackers/uffd-wp/uffd-wp-tracker.js';
import { createTaskThrottle } from '../throttle/choose-throttle.js';
import { inspectTarget, type TargetTree } from './inspect-target.js';
import { readPreflightFacts, type AgentFacts, type TreeFacts } from '../preflight/preflight-facts.js';
import { lockTaskTree, type TaskLock } from '../task-lock.js';
import { lazyDumpSupported, startLazyDump } from '../../shared/criu/criu-lazy-dump.js';
import { probeNetworkLock, type CriuFeatures, type NetworkLock } from '../../shared/criu/criu-features.js';
import { readTaskCriuNeeds, type TaskCriuNeeds } from '../../shared/kernel/task-criu-needs.js';
import { dropCriuLockOnceGone, lockNetns, tcpDumpUndoCommand, undoTcpEstablishedDump, type TcpDumpLock, type TcpDumpUndoReport } from '../../shared/criu/tcp-dump-undo.js';
import { readTaskMountNamespace, type TaskMountNamespace } from '../../shared/kernel/task-mount-namespace.js';
import { criuMountNamespaceArgs } from '../../shared/criu/criu-mount-namespace.js';
import { readTaskNetworkPeer, type TaskNetworkPeer } from '../../shared/kernel/read-task-network.js';
import { deleteJournaledOuterLink, type OuterLinkDeletion } from '../../shared/kernel/outer-veth.js';
import { holdTaskNetwork, releaseTaskNetworkHold, type HoldReleaseReport, type TaskNetworkHold } from '../../shared/kernel/task-network-hold.js';
import { ProcessMemoryReader } from '../../shared/kernel/process-memory.js';
import { uploadImages } from '../grpc-image-upload.js';
import type { DumpMode } from '../config/environment.js';
import { SourceJournal, type SourceJournalState, type StartedFields } from './source-journal.js';
import type { FillManifest } from './fill-manifests.js';

const memoryReader = new ProcessMemoryReader();

export interface TreeMember {
  hostPid: number;
  /** Pid in the root's pid namespace: the key CRIU names images by. */
  nsPid: number;
}

export interface FreezeLeasePort {
  /** The guard, firing, first waits for this criu dump to end (see thaw-guard.ts). */
  waitForDump(criuPid: number): void;
  /** A command the guard runs before it thaws the tree on its own (the undo of a --tcp-established dump). */
  runBeforeThaw(argv: readonly string[]): void;
  disarm(): Promise<void>;
  release(): Promise<void>;
}

export interface ThrottlePort {
  readonly method: string;
  readonly percent: number;
  set(percent: number): Promise<void>;
  /** Back to how the task was; never throws: what went wrong is in `errors`. */
  release(): Promise<void>;
  readonly errors: readonly Error[];
}

/**
 * 'lazy': the images hold no anonymous memory (PE_LAZY entries): the final delta reads it from the stopped
 * task. 'full': every page is in the pages images (kernels without userfaultfd).
 */
export type DumpKind = 'lazy' | 'full';

export interface SourceHost {
  pageSize: number;
  inspectTarget(pid: number): TargetTree;
  /** One migration per task: locks every process of the tree until release(); TASK_ALREADY_MIGRATING if taken. */
  lockTask(locksDir: string, target: TargetTree): TaskLock;
  /** The processes of the tree now; empty once the root is gone. */
  tree(rootPid: number): TreeMember[];
  peerInfo(): Promise<m.PeerInfo>;
  /** The criu to dump with: SOURCE_NO_CRIU without one. */
  requireCriu(): Promise<string>;
  /** Resolves --tracker (auto probes the kernel) without touching the task. */
  chooseTracker(choice: TrackerChoice): Promise<{ name: TrackerName; note: string }>;
  createTracker(name: TrackerName): DirtyTracker;
  armFreezeLease(deadlineMs: number, pgid: number, pids: number[]): FreezeLeasePort;
  /**
   * criu dump --leave-stopped of the tree into imagesDir. Deliberately not cancellable: a criu killed
   * mid-dump leaves parasite mappings in the task, so Ctrl-C waits for the dump and then rolls back.
   */
  dump(o: {
    pid: number;
    imagesDir: string;
    logFile: string;
    timeoutMs: number;
    mode: DumpMode;
    onCriuStarted?: (pid: number) => void;
    features: CriuFeatures;
    networkLock?: NetworkLock | undefined;
    /** The task's own mount namespace, if it has one: its external mounts are declared to criu. */
    mountNs?: TaskMountNamespace | undefined;
  }): Promise<DumpKind>;
  /** What criu must be told about these processes (file locks, connected TCP), read from /proc. */
  criuNeeds(pids: readonly number[]): TaskCriuNeeds;
  /** The task's own mount namespace as criu must be told about it; undefined when it shares this agent's. */
  mountNamespace(rootPid: number): TaskMountNamespace | undefined;
  /** The network-lock method that works here for established TCP, or undefined; probed once. */
  networkLock(): Promise<NetworkLock | undefined>;
  /** Where a --tcp-established dump of this tree puts CRIU's lock (tcp-dump-undo.ts). */
  tcpDumpLock(rootPid: number, dumpLog: string): TcpDumpLock;
  /** That undo (and the network hold's, first) as a command for the freeze guard; undefined where it cannot run (not built). */
  tcpDumpUndoCommand(pids: readonly number[], lock: TcpDumpLock | undefined, hold: TaskNetworkHold | undefined): string[] | undefined;
  /** The task's own network identity and its outer end's ifindex (shared/kernel/read-task-network.ts); undefined when it shares this agent's netns. */
  taskNetwork(rootPid: number): TaskNetworkPeer | undefined;
  /** Puts the network hold on the task's namespace (task-network-hold.ts); throws when it cannot. */
  holdTaskNetwork(hold: TaskNetworkHold): void;
  /** Rollback: the hold let go in the original's namespace, its addresses announced; never throws. */
  releaseTaskNetworkHold(hold: TaskNetworkHold): Promise<HoldReleaseReport>;
  /** After the commit: the veth's outer end deleted in this agent's netns, only while it has the journaled ifindex (outer-veth.ts). */
  deleteOuterLink(name: string, ifindex: number): OuterLinkDeletion;
  /** Rollback of a --tcp-established dump: the stopped tree's sockets out of repair mode, the lock deleted. */
  undoTcpDump(pids: readonly number[], lock: TcpDumpLock): TcpDumpUndoReport;
  /** After the commit: once `pids` are gone (within `budgetMs`), the lock deleted; errors say why not. */
  dropTcpDumpLock(pids: readonly number[], lock: TcpDumpLock, budgetMs: number): Promise<TcpDumpUndoReport>;
  /** What the preflight's checks read of the tree and of this process, from /proc only. */
  preflightFacts(pids: readonly number[]): { tree: TreeFacts; agent: AgentFacts };
  /** The process's start time, undefined once it is gone: a pid is the same process only while this matches. */
  startTime(pid: number): number | undefined;
  /** Reads pages of a stopped task (the final delta of a lazy dump comes from the task itself). */
  readPages(pid: number, firstPage: number, count: number): Iterable<{ data: Buffer; pages: Float64Array; unreadable: readonly number[] }>;
  signalTree(rootPid: number, signal: TreeSignal): void;
  /** Waits (bounded) until each process has exited (shared/kernel/process-wait.ts); the pids still alive as those. */
  waitExited(procs: readonly ProcessIdentity[], budgetMs: number, signal?: AbortSignal): Promise<number[]>;
  /** Auto-converge: takes CPU from the tree (its own cgroup when it has one, else SIGSTOP/SIGCONT cycling). */
  createThrottle(rootPid: number, log: Logger): Promise<ThrottlePort>;
}

export interface PageStream {
  readonly bytesSent: number;
  readonly pagesSent: number;
  /** Bytes the dest acknowledged, and the time it spent storing them. */
  readonly storedBytes: number;
  readonly storeMicros: number;
  send(task: number, round: number, batch: PageBatch): Promise<void>;
  flush(): Promise<void>;
  finish(): Promise<void>;
  cancel(): void;
}

export interface DestPort {
  negotiate(req: m.NegotiateRequest, signal: AbortSignal): Promise<m.NegotiateResponse>;
  prepare(req: m.PrepareRequest, signal: AbortSignal): Promise<m.PrepareResponse>;
  /** Over the page channels Prepare offered (`opts.channels`, opened before this resolves), else StreamPages. */
  openPageStream(opts: PageStreamOptions): PageStream | Promise<PageStream>;
  uploadImages(imagesDir: string, ids: { migrationId: string; epoch: string }, signal: AbortSignal): Promise<{ files: number; bytes: number }>;
  restore(req: m.RestoreRequest, signal: AbortSignal): Promise<m.RestoreResponse>;
  commit(req: m.CommitRequest): Promise<m.CommitResponse>;
  abort(req: m.AbortRequest): Promise<m.AbortResponse>;
  /** Opens a Fill call (lazy restore, after the Commit); `signal` cancels it. */
  fill(handlers: FillCallHandlers, signal: AbortSignal): FillCall;
  /** Whether the connection is up within `timeoutMs` (a call made while it is not never leaves this host). */
  reachable(timeoutMs: number): Promise<boolean>;
  close(): void;
}

/** The migration's journal (source-journal.ts): each entry on disk before the step it announces acts. */
export interface JournalPort {
  /** A `done` removes the fill manifests too. */
  record(state: SourceJournalState, fields?: Record<string, unknown>): Promise<void>;
  /** Keeps a lazy restore's manifests beside the journal, durably, for a resolver's fill (fill-manifests.ts). */
  saveFillManifests(manifests: readonly FillManifest[], pageSize: number): Promise<void>;
  close(): Promise<void>;
}

export type { FillCall, FillCallHandlers };

export interface MigrationPorts {
  /** Opens the journal of a new migration, its "started" entry written. */
  beginJournal(dir: string, migrationId: string, started: StartedFields): Promise<JournalPort>;
  host: SourceHost;
  /** Connects to the dest agent; DEST_UNREACHABLE when it cannot within the budget. */
  connectDest(address: string, timeoutMs: number, signal: AbortSignal): Promise<DestPort>;
}

export const realSourceHost: SourceHost = {
  pageSize: PAGE_SIZE,
  inspectTarget,
  lockTask: (locksDir, target) => lockTaskTree(locksDir, target.rootPid, target.tasks.map((t) => t.hostPid)),
  tree: (rootPid) => readProcessTree(rootPid)?.processes.map((p) => ({ hostPid: p.hostPid, nsPid: p.nsPid })) ?? [],
  peerInfo: async () => localPeerInfo(await availableTrackers()),
  requireCriu: async () => {
    const criu = await requireCriu('source');
    // Probed now (negotiate) and awaited by dump(): `criu check` takes ~70 ms, which must not land in the freeze.
    void lazyDumpSupported(criu);
    return criu;
  },
  chooseTracker,
  createTracker: (name) => (name === 'soft-dirty' ? new SoftDirtyTracker(PAGE_SIZE) : name === 'uffd-wp' ? new UffdWpTracker(PAGE_SIZE) : new HashTracker(PAGE_SIZE)),
  armFreezeLease: (deadlineMs, pgid, pids) => new FreezeLease(deadlineMs, pgid, pids),
  dump: async (o) => {
    const criu = await requireCriu('source');
    if (o.mode !== 'full' && (await lazyDumpSupported(criu))) {
      const dump = await startLazyDump({ criu, pid: o.pid, imagesDir: o.imagesDir, logFile: o.logFile, readyTimeoutMs: o.timeoutMs, onStarted: o.onCriuStarted, features: o.features, networkLock: o.networkLock, extraArgs: criuMountNamespaceArgs(o.mountNs, 'dump') });
      // The delta is read from the stopped task after CRIU lets go of it: nothing is asked of CRIU's server.
      await dump.finish();
      return 'lazy';
    }
    await criuDump({
      criu,
      pid: o.pid,
      imagesDir: o.imagesDir,
      logFile: o.logFile,
      leaveStopped: true,
      timeoutMs: o.timeoutMs,
      onStarted: o.onCriuStarted,
      fileLocks: o.features.fileLocks,
      tcpEstablished: o.features.tcpEstablished,
      networkLock: o.networkLock,
      extraArgs: criuMountNamespaceArgs(o.mountNs, 'dump'),
    });
    return 'full';
  },
  criuNeeds: (pids) => readTaskCriuNeeds(pids),
  mountNamespace: (rootPid) => readTaskMountNamespace(rootPid),
  networkLock: async () => probeNetworkLock(await requireCriu('source')),
  tcpDumpLock: (rootPid, dumpLog) => ({ dumpLog, netns: lockNetns(rootPid) }),
  tcpDumpUndoCommand,
  taskNetwork: (rootPid) => readTaskNetworkPeer(rootPid),
  holdTaskNetwork,
  releaseTaskNetworkHold: (hold) => releaseTaskNetworkHold(hold),
  deleteOuterLink: (name, ifindex) => deleteJournaledOuterLink(name, ifindex),
  undoTcpDump: undoTcpEstablishedDump,
  dropTcpDumpLock: dropCriuLockOnceGone,
  preflightFacts: (pids) => readPreflightFacts(pids),
  startTime: (pid) => readStat(pid)?.startTime,
  readPages: (pid, firstPage, count) => memoryReader.chunks(pid, { starts: [firstPage], counts: [count] }),
  signalTree: (rootPid, sig) => {
    signalTree(rootPid, sig);
  },
  waitExited: (procs, budgetMs, signal) => waitExited(procs, budgetMs, signal),
  createThrottle: (rootPid, log) => createTaskThrottle(rootPid, { log }),
};

/** `security` absent: TLS from the default files (tests' fallback; the commands and the daemon pass their own). */
export async function connectGrpcDest(address: string, timeoutMs: number, signal: AbortSignal, security?: TransportSecurity): Promise<DestPort> {
  const client = new DestClient(address, security);
  try {
    await client.connect(timeoutMs, signal);
  } catch (e) {
    client.close();
    throw e;
  }
  return {
    negotiate: (req, s) => client.negotiate(req, s),
    prepare: (req, s) => client.prepare(req, s),
    openPageStream: (opts) =>
      opts.channels
        ? PageChannelStream.open({ dest: parseHostPort(address, 'dest address'), port: opts.channels.port, token: opts.channels.token, channels: opts.channels.count, security: client.security }, opts)
        : new GrpcPageStream(client, opts),
    uploadImages: (dir, ids, s) => uploadImages(client, dir, ids, s),
    restore: (req, s) => client.restore(req, s),
    commit: (req) => client.commit(req),
    abort: (req) => client.abort(req),
    fill: (handlers, s) => client.fill(handlers, s),
    reachable: (ms) => client.whenConnected(ms),
    close: () => client.close(),
  };
}

const beginJournal: MigrationPorts['beginJournal'] = (dir, id, started) => SourceJournal.begin(dir, id, started);

export const realPorts: MigrationPorts = { host: realSourceHost, connectDest: connectGrpcDest, beginJournal };

/** The real world, with the dest dialed under the caller's transport security (`ferry migrate`'s TLS flags). */
export function grpcPorts(security: TransportSecurity): MigrationPorts {
  return { host: realSourceHost, connectDest: (address, timeoutMs, signal) => connectGrpcDest(address, timeoutMs, signal, security), beginJournal };
}
