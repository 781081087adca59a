/**
 * TypeScript shapes of the ferry.v1 messages as @grpc/proto-loader presents them (camelCase, uint64 as
 * decimal strings, bytes as Buffer, enums as their names). Keep in step with proto/ferry/v1/ferry.proto.
 */
import type { PageBatch } from './page-batch.js';

export type U64 = string;

export interface PeerInfo {
  ferryVersion: string;
  protocolVersions: number[];
  pageSize: number;
  arch: string;
  kernel: string;
  hostname: string;
  trackers: string[];
  criuVersion: string;
  criuProblem: string;
  features: string[];
  /** A dest without lazy-restore: why. */
  lazyRestoreProblem?: string;
  /** /proc/cpuinfo's flags, sorted (absent from a peer of an older build: the preflight says it cannot compare). */
  cpuFlags?: string[];
  /** The IP addresses of the agent's network namespace. */
  addresses?: string[];
  /** The agent's process.version (absent from a peer of an older build). */
  nodeVersion?: string;
}

export interface NegotiateRequest {
  source: PeerInfo;
  /** The mount points the dump would declare external; absent or empty: none. */
  externalMounts?: string[];
  /** The page codecs the source can send besides none; absent or empty: none. */
  pageCodecs?: string[];
  /** The task's own network identity (`ferry run --net`); absent: it shares the source host's netns. */
  taskNetwork?: TaskNetworkMessage | null;
}
export interface NegotiateResponse {
  dest: PeerInfo;
  protocolVersion: number;
  /** Of the request's externalMounts, those the dest lacks (a dest with MOUNT_PATHS_FEATURE answers). */
  missingMounts?: string[];
  /** Of the request's pageCodecs, those the dest decodes (absent from a dest before compression: none). */
  pageCodecs?: string[];
  /** The answer to the request's taskNetwork (a dest with TASK_NETWORK_FEATURE answers). */
  taskNetwork?: TaskNetworkAnswerMessage | null;
}
export interface TaskNetworkAnswerMessage {
  bridge: string;
  /** '' when the bridge exists, is a bridge and is up. */
  bridgeProblem: string;
  taken: { address: string; macs: string[] }[];
}

export interface PrepareRequest {
  migrationId: string;
  epoch: U64;
  protocolVersion: number;
  requiredPids: number[];
  expectedBytes: U64;
  taskName: string;
  /** Page channels the source would open (0 or absent: none, pages go over StreamPages). */
  pageChannels?: number;
}
export interface PrepareResponse {
  workDir: string;
  freeBytes: U64;
  /** The dest's page-channel port, the session's channel token and how many channels it accepts; 0/empty: none. */
  pageChannelPort?: number;
  pageChannelToken?: Buffer;
  pageChannels?: number;
}

/** The PageBatch message: which stream, round and task, then the batch itself (page-batch.ts). */
export interface PageBatchMessage extends PageBatch {
  migrationId: string;
  epoch: U64;
  seq: U64;
  round: number;
  task: number;
  /** PAGE_CODEC of `data` (shared/pages/batch-codec.ts); 0 or absent: none. */
  codec?: number;
  /** `data`'s decoded length; 0 or absent with codec none: data's own. */
  rawBytes?: number;
}
export interface PageAck {
  seq: U64;
  pages: number;
  bytes: U64;
  storeUs: U64;
  /** Page bytes stored (decoded); "0" or absent from a dest before compression: `bytes`. */
  rawBytes?: U64;
}

export interface ImageChunk {
  migrationId: string;
  epoch: U64;
  name: string;
  offset: U64;
  data: Buffer;
  totalSize: U64;
}
export interface UploadImagesResponse {
  files: number;
  bytes: U64;
}

export interface PagesImageManifest {
  pagemapImage: string;
  task: number;
  hashes: Buffer;
  /** One bit per page, LSB first: the hash awaits confirmation in the fill. Empty: all confirmed. */
  unconfirmed?: Buffer;
  /** Post-copy: one bit per page, LSB first: the dest holds no bytes of it (hash zero, unconfirmed too). Empty: none. */
  remote?: Buffer;
}
export type RestoreMode = 'RESTORE_MODE_EAGER' | 'RESTORE_MODE_LAZY';
export interface RestoreRequest {
  migrationId: string;
  epoch: U64;
  pages: PagesImageManifest[];
  timeoutMs: number;
  commitLeaseMs: number;
  mode?: RestoreMode;
  /** The CRIU features the dump used; the restore needs the same. Absent: none. */
  criuFeatures?: CriuFeaturesMessage | null;
  /** The task's own mount namespace (`ferry run --mounts private`). Absent: it shares the host's. */
  mountNs?: MountNamespaceMessage | null;
  /** The task's own network namespace (`ferry run --net`). Absent: it shares the host's. */
  taskNetwork?: TaskNetworkMessage | null;
}
/** proto TaskNetwork: shared/kernel/task-network.ts has the meaning of each field. */
export interface TaskNetworkMessage {
  innerLink: string;
  mac: string;
  addresses: string[];
  outerLink: string;
  bridge: string;
}
export interface MountNamespaceMessage {
  /** Mount points bind-mounted from the same path on the dest. */
  externalMounts: string[];
}
export interface CriuFeaturesMessage {
  fileLocks: boolean;
  tcpEstablished: boolean;
}
export interface RestoreResponse {
  restoredPid: number;
  rebuildUs: U64;
  restoreUs: U64;
  pagesFromStore: U64;
  bytesWritten: U64;
  pagesLazy?: U64;
}

export interface CommitRequest {
  migrationId: string;
  epoch: U64;
}
export interface CommitResponse {
  restoredPid: number;
  resumedAtUnixUs: U64;
}

export interface FillRequest {
  migrationId: string;
  epoch: U64;
  task: number;
  firstIndex: U64;
  count: number;
  data: Buffer;
  /** One bit per page of the request, LSB first: 1 = its bytes are next in `data`, 0 = confirmed. Empty: as `data` says. */
  withData?: Buffer;
}
export interface FillWanted {
  task: number;
  firstIndex: U64;
  count: number;
  bytes: boolean;
}
export interface FillProgress {
  filledPages: U64;
  totalPages: U64;
  faults: U64;
}
export interface FillDone {
  filledPages: U64;
  faults: U64;
  replacedPages: U64;
  damagedPages: U64;
  zeroPages: U64;
  fillUs: U64;
  faultsWaited: U64;
  remotePages?: U64;
  waitP50Us?: U64;
  waitP99Us?: U64;
  waitMaxUs?: U64;
}
/** Pages of a task the dest's pager has already (confirmed or with bytes): one bit per manifest index. */
export interface FillReady {
  task: number;
  pages: Buffer;
}
/** The data bytes of this call's requests the dest has handed to its pager, so far. */
export interface FillAck {
  dataBytes: U64;
}
export interface FillEvent {
  wanted?: FillWanted;
  progress?: FillProgress;
  done?: FillDone;
  ready?: FillReady;
  ack?: FillAck;
  detail?: 'wanted' | 'progress' | 'done' | 'ready' | 'ack';
}

export interface AbortRequest {
  migrationId: string;
  epoch: U64;
  reason: string;
}
export interface AbortResponse {
  existed: boolean;
  alreadyCommitted: boolean;
  killedRestoredCopy: boolean;
}

export interface CheckRequest {
  dest: string;
  /** proto3 optional: absent, no preflight. */
  pid?: number;
  allow?: string[];
  fileLocks?: string;
  tcpEstablished?: string;
}
export interface PreflightFindingMessage {
  check: string;
  verdict: string;
  code: string;
  message: string;
  hint: string;
}
export interface CheckResponse {
  source: PeerInfo | null;
  dest: PeerInfo | null;
  destProblem: string;
  protocolVersion: number;
  /** With CheckRequest.pid only. */
  preflight?: PreflightFindingMessage[];
}

/** proto3 `optional` options: absent when not given. */
export interface MigrateRequest {
  pid: number;
  dest: string;
  maxRounds?: number | undefined;
  maxDowntimeMs?: number | undefined;
  freezeTimeoutMs?: number | undefined;
  restoreTimeoutMs?: number | undefined;
  bandwidthBytesPerSecond?: number | undefined;
  onNoConverge?: string | undefined;
  noPrecopy?: boolean | undefined;
  tracker?: string | undefined;
  commitPatienceMs?: number | undefined;
  restore?: string | undefined;
  postCopy?: string | undefined;
  fileLocks?: string | undefined;
  tcpEstablished?: string | undefined;
  compress?: string | undefined;
  /** Preflight checks to override (`--allow`); proto3 repeated: [] when none. */
  allow?: string[] | undefined;
  pageChannels?: number | undefined;
}

export type ProtoPhase =
  | 'PHASE_UNSPECIFIED'
  | 'PHASE_NEGOTIATE'
  | 'PHASE_PREPARE'
  | 'PHASE_PRECOPY'
  | 'PHASE_FREEZE'
  | 'PHASE_FINAL_DELTA'
  | 'PHASE_RESTORE'
  | 'PHASE_COMMIT'
  | 'PHASE_ROLLBACK'
  | 'PHASE_FILL';

export interface MigrationStartedMessage {
  pid: number;
  dest: string;
  tasks: number;
  tracker: string;
  trackerNote: string;
}

export interface RoundSummaryMessage {
  round: number;
  presentPages: U64;
  dirtyPages: U64;
  zeroPages: U64;
  bytesSent: U64;
  bytesRead: U64;
  durationMs: number;
  transferMs: number;
  throttlePercent: number;
  /** Absent from an agent before compression. */
  codec?: string;
  wireBytes?: U64;
}

/** proto3 `optional` fields: absent when unset. */
export interface ConvergenceDecisionMessage {
  action: string;
  rule: string;
  expectedDowntimeMs?: number;
  dirtyRateBytesPerSecond?: number;
  transferRateBytesPerSecond?: number;
  fixedCostMs: number;
  throttlePercent: number;
  remainingBytes: U64;
}

export interface PhaseTimesMessage {
  dumpMs?: number;
  finalDeltaMs?: number;
  rebuildMs?: number;
  restoreMs?: number;
  commitMs?: number;
}

export interface MigrationSummaryMessage {
  migrationId: string;
  pid: number;
  dest: string;
  tracker: string;
  tasks: number;
  rounds: RoundSummaryMessage[];
  decision: string;
  presentPages: U64;
  pagesSent: U64;
  pageBytesSent: U64;
  finalDeltaPages: U64;
  dumpPages: U64;
  imageBytesSent: U64;
  totalMs: number;
  downtimeMs: number;
  phases: PhaseTimesMessage | null;
  restoredPid: number;
  dumpKind: string;
  finalDeltaTaskPages: U64;
  throttle: { method: string; maxPercent: number } | null;
  restoreMode: string;
  fillMs: number;
  fillFaults: U64;
  fillFaultsWaited: U64;
  replacedPages: U64;
  confirmedPages: U64;
  filledPages: U64;
  pagerFillUs: U64;
  postCopy: string;
  postCopied: boolean;
  precopyBytes: U64;
  downtimeBytes: U64;
  postcopyBytes: U64;
  remotePages: U64;
  faultWaitP50Us: U64;
  faultWaitP99Us: U64;
  originalExitMs?: number;
  originalLeft?: number[];
  /** Absent from an agent before compression. */
  compress?: string;
  pageCodec?: string;
  pageWireBytes?: U64;
}

export interface ErrorInfoMessage {
  code: string;
  key: string;
  message: string;
  hint: string;
  phase: ProtoPhase;
  side: string;
  retryable: boolean;
  sourceState: string;
  detail: string;
  rollbackErrors: string[];
}

export interface MigrationEventMessage {
  migrationId: string;
  phase: ProtoPhase;
  kind: string;
  round: number;
  dirtyPages: U64;
  pagesSent: U64;
  bytesSent: U64;
  rateBytesPerSecond: number;
  message: string;
  /** Which member of the `detail` oneof is set (proto-loader's `oneofs: true`). */
  detail?: 'started' | 'roundSummary' | 'decision' | 'summary' | 'error';
  started?: MigrationStartedMessage | null;
  roundSummary?: RoundSummaryMessage | null;
  decision?: ConvergenceDecisionMessage | null;
  summary?: MigrationSummaryMessage | null;
  error?: ErrorInfoMessage | null;
}
