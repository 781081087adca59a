/**
 * User options of a migration and their compiled (validated, defaulted) form, used by everything inside.
 * Flags (the CLI), the Migrate request (the source agent) and the environment meet here once: the options
 * are compiled where the migration runs, and nothing after that reads a flag or an environment variable.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type { NoConvergeAction } from '../../shared/policy/convergence.js';
import type { CompressMode } from '../../shared/policy/compression-choice.js';
import type { TrackerChoice } from '../trackers/tracker.js';
import { restoreChoice, type RestoreChoice } from '../migration/restore-mode.js';
import type { PostCopyChoice } from '../migration/events.js';
import { formatHostPort, parseHostPort } from '../../shared/transport/address.js';
import { join } from 'node:path';
import { featureChoice, type FeatureChoice } from '../../shared/criu/criu-features.js';
import type { CriuFeaturesChoice } from '../migration/criu-features-choice.js';
import { costModelPath } from '../cost-model.js';
import { compileAllow } from '../preflight/preflight.js';
import { readSourceEnvironment, sourceJournalDir, type DumpMode, type SourceEnvironment } from './environment.js';

/**
 * Auto: a rollback after a dump with --tcp-established takes the sockets out of repair mode and deletes CRIU's
 * lock before the thaw (shared/criu/tcp-dump-undo.ts), so the connections survive a failed migration.
 */
const TCP_ESTABLISHED_DEFAULT: FeatureChoice = 'auto';

/** A Commit that may have reached the dest is asked about this long (the dest decides within its lease). */
export const ANSWER_PATIENCE_MS = 5 * 60_000;
/** A dest unreachable at every Commit attempt for this long: the source rolls back (the dest's lease removes the copy). */
export const UNDELIVERED_PATIENCE_MS = 10_000;

export interface MigrateOptions {
  pid: number;
  /** HOST:PORT of the dest agent. */
  to: string;
  maxRounds?: number | undefined;
  maxDowntimeMs?: number | undefined;
  /** Pages under which the dirty set is small enough to freeze at once. */
  floorPages?: number | undefined;
  /** Longest the task may stay frozen before the source thaws it on its own. */
  freezeTimeoutMs?: number | undefined;
  restoreTimeoutMs?: number | undefined;
  /** Unacknowledged page bytes allowed in flight to the dest. */
  windowBytes?: number | undefined;
  /** Where the final dump's images go (tmpfs keeps the freeze short); default $FERRY_IMAGES_DIR. */
  imagesRoot?: string | undefined;
  connectTimeoutMs?: number | undefined;
  /** Cap on pre-copy traffic, bytes per second; undefined = no cap. */
  bandwidthBytesPerSecond?: number | undefined;
  onNoConverge?: NoConvergeAction | undefined;
  /** Stop-and-copy: no pre-copy rounds, the final delta carries every page. */
  noPrecopy?: boolean | undefined;
  tracker?: string | undefined;
  commitPatienceMs?: number | undefined;
  undeliveredPatienceMs?: number | undefined;
  /** auto (default: lazy where the dest offers it), lazy or eager. */
  restore?: string | undefined;
  /** off (default), auto (when pre-copy does not converge) or always (right after round 0). */
  postCopy?: string | undefined;
  /** auto (default: when the tree holds a file lock), on or off: criu's --file-locks. */
  fileLocks?: string | undefined;
  /** auto (default: when the tree has a connected TCP socket), on or off: criu's --tcp-established. */
  tcpEstablished?: string | undefined;
  /** Preflight checks whose refusal the operator overrides (`--allow cpu-features`): overridable ones only. */
  allow?: string[] | undefined;
  /** auto (default: where the link is the limit), off or zstd: the page batches' codec. */
  compress?: string | undefined;
  /** zstd's level, 1 (default) to 19; no flag: the choice's speed estimates assume a fast level. */
  compressLevel?: number | undefined;
  /** Page channels to send pages over (0: the gRPC page stream). */
  pageChannels?: number | undefined;
}

export interface CompiledMigrateOptions {
  pid: number;
  to: string;
  maxRounds: number;
  maxDowntimeMs: number;
  floorPages: number;
  freezeTimeoutMs: number;
  restoreTimeoutMs: number;
  windowBytes: number;
  imagesRoot: string;
  connectTimeoutMs: number;
  bandwidthBytesPerSecond: number | undefined;
  onNoConverge: NoConvergeAction;
  noPrecopy: boolean;
  tracker: TrackerChoice;
  dumpMode: DumpMode;
  /** Where the learned cost model lives (under $FERRY_STATE_DIR). */
  costModelPath: string;
  /** Where migrations lock the tasks they move (under $FERRY_STATE_DIR). */
  taskLocksDir: string;
  /** Where migrations journal their decisions (under $FERRY_STATE_DIR), for --resume and the daemon. */
  journalDir: string;
  /** How long an unanswered Commit that may have been delivered is asked about before exit 3. */
  commitPatienceMs: number;
  /** How long a dest unreachable at every Commit attempt is waited for before rolling back. */
  undeliveredPatienceMs: number;
  /** How the dest restores; negotiate resolves auto against the dest's features. */
  restore: RestoreChoice;
  /** When to resume the copy before the dest holds its memory (post-copy needs a lazy restore). */
  postCopy: PostCopyChoice;
  /** criu's --file-locks and --tcp-established; auto decides from what the tree holds (criu-features-choice.ts). */
  criuFeatures: CriuFeaturesChoice;
  /** The preflight checks `--allow` overrides, validated (source-agent/preflight/preflight.ts). */
  allow: string[];
  /** --compress; negotiate resolves it against the codecs both agents speak. */
  compress: CompressMode;
  /** zstd's level (1: the lab's 2.3-3.4 GB/s on heap-like pages). */
  compressLevel: number;
  /** 0 to MAX_PAGE_CHANNELS; used only with a dest that offers page channels. */
  pageChannels: number;
}

/** As the dest accepts at most (dest-agent/page-channel/page-channel-server.ts). */
export const MAX_PAGE_CHANNELS = 16;
/**
 * One channel: on 2 shared cores a second one measured no faster (both are encrypted on the one event loop;
 * see docs/protocol.md, "Page channels").
 */
export const DEFAULT_PAGE_CHANNELS = 1;

function pageChannels(v: number | undefined): number {
  if (v === undefined) return DEFAULT_PAGE_CHANNELS;
  if (!Number.isInteger(v) || v < 0 || v > MAX_PAGE_CHANNELS) {
    throw new FerryError('BAD_ARGUMENT', { message: `--page-channels must be an integer from 0 to ${MAX_PAGE_CHANNELS} (got ${v})`, hint: 'Give 1 (the default), more on a fast link with cores to spare, or 0 for the gRPC page stream.' });
  }
  return v;
}

function positiveInt(name: string, v: number | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1 || v > max) {
    throw new FerryError('BAD_ARGUMENT', { message: `${name} must be an integer from 1 to ${max} (got ${v})` });
  }
  return v;
}

export function compileMigrateOptions(o: MigrateOptions, env: SourceEnvironment = readSourceEnvironment()): CompiledMigrateOptions {
  if (!Number.isInteger(o.pid) || o.pid < 1 || o.pid > 4194304) {
    throw new FerryError('BAD_ARGUMENT', { message: `PID must be a positive integer (got ${o.pid})` });
  }
  const restore = restoreChoice(o.restore);
  const noPrecopy = o.noPrecopy ?? false;
  const { postCopy, onNoConverge } = postCopyAndNoConverge(o.postCopy, o.onNoConverge, restore, noPrecopy);
  return {
    pid: o.pid,
    to: formatHostPort(parseHostPort(o.to, '--to address')),
    maxRounds: positiveInt('--max-rounds', o.maxRounds, 10, 100),
    maxDowntimeMs: positiveInt('--max-downtime', o.maxDowntimeMs, 300, 600_000),
    floorPages: positiveInt('floor pages', o.floorPages, 64, 1 << 30),
    freezeTimeoutMs: positiveInt('--freeze-timeout', o.freezeTimeoutMs, 120_000, 3_600_000),
    restoreTimeoutMs: positiveInt('--restore-timeout', o.restoreTimeoutMs, 120_000, 3_600_000),
    windowBytes: positiveInt('window bytes', o.windowBytes, 16 * 1024 * 1024, 1 << 30),
    imagesRoot: o.imagesRoot ?? env.imagesRoot,
    connectTimeoutMs: positiveInt('connect timeout', o.connectTimeoutMs, 5_000, 600_000),
    bandwidthBytesPerSecond: bandwidth(o.bandwidthBytesPerSecond),
    onNoConverge,
    noPrecopy,
    tracker: trackerChoice(o.tracker),
    dumpMode: env.dumpMode,
    costModelPath: costModelPath(env.stateDir),
    taskLocksDir: join(env.stateDir, 'source', 'locks'),
    journalDir: sourceJournalDir(env),
    commitPatienceMs: positiveInt('--commit-patience', o.commitPatienceMs, ANSWER_PATIENCE_MS, 24 * 3_600_000),
    undeliveredPatienceMs: positiveInt('undelivered patience', o.undeliveredPatienceMs, UNDELIVERED_PATIENCE_MS, 3_600_000),
    restore,
    postCopy,
    criuFeatures: compileCriuFeatures(o.fileLocks, o.tcpEstablished),
    pageChannels: pageChannels(o.pageChannels),
    allow: compileAllow(o.allow),
    compress: compressMode(o.compress),
    compressLevel: positiveInt('compress level', o.compressLevel, 1, 19),
  };
}

function compressMode(v: string | undefined): CompressMode {
  if (v === undefined) return 'auto';
  if (v === 'auto' || v === 'off' || v === 'zstd') return v;
  throw new FerryError('BAD_ARGUMENT', { message: `--compress must be auto, off or zstd (got "${v}")`, hint: 'auto (the default) compresses only where the link is the limit.' });
}

/** --file-locks and --tcp-established (also `ferry check PID`'s, for its preflight). */
export function compileCriuFeatures(fileLocks: string | undefined, tcpEstablished: string | undefined): CriuFeaturesChoice {
  return { fileLocks: criuFeatureFlag('--file-locks', fileLocks), tcpEstablished: tcpEstablished === undefined ? TCP_ESTABLISHED_DEFAULT : criuFeatureFlag('--tcp-established', tcpEstablished) };
}

function criuFeatureFlag(flag: string, v: string | undefined): FeatureChoice {
  const c = featureChoice(v);
  if (c === undefined) throw new FerryError('BAD_ARGUMENT', { message: `${flag} must be auto, on or off (got "${v}")`, hint: `auto (the default) turns it on when the task needs it.` });
  return c;
}

/** At least 1 MB/s: below that a migration of any real task would take hours. */
function bandwidth(v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v) || v < 1e6) throw new FerryError('BAD_ARGUMENT', { message: `--bandwidth must be at least 1 MB/s (got ${v} bytes/s)` });
  return v;
}

function noConvergeAction(v: string | undefined): NoConvergeAction | undefined {
  if (v === undefined) return undefined;
  if (v === 'postcopy' || v === 'freeze' || v === 'throttle' || v === 'abort') return v;
  throw new FerryError('BAD_ARGUMENT', { message: `--on-no-converge must be postcopy, throttle, freeze or abort (got "${v}")` });
}

function postCopyChoice(v: string | undefined): PostCopyChoice | undefined {
  if (v === undefined) return undefined;
  if (v === 'off' || v === 'auto' || v === 'always') return v;
  throw new FerryError('BAD_ARGUMENT', { message: `--post-copy must be off, auto or always (got "${v}")`, hint: 'off (the default) never resumes the copy before the dest holds its memory.' });
}

/**
 * --post-copy and --on-no-converge decide together: under auto the no-converge action IS post-copy, and
 * `--on-no-converge postcopy` alone means `--post-copy auto`. Post-copy is a lazy restore after pre-copy, so
 * it refuses --restore eager and --no-precopy. Every refusal is before anything is touched.
 */
function postCopyAndNoConverge(
  pc: string | undefined,
  nc: string | undefined,
  restore: RestoreChoice,
  noPrecopy: boolean,
): { postCopy: PostCopyChoice; onNoConverge: NoConvergeAction } {
  const asked = postCopyChoice(pc);
  const action = noConvergeAction(nc);
  const postCopy = asked ?? (action === 'postcopy' ? 'auto' : 'off');
  const refuse = (message: string, hint: string): never => {
    throw new FerryError('BAD_ARGUMENT', { message, hint });
  };
  if (postCopy === 'off') {
    if (action === 'postcopy') refuse('--on-no-converge postcopy contradicts --post-copy off', 'Drop one of them: --on-no-converge postcopy alone means --post-copy auto.');
    return { postCopy, onNoConverge: action ?? 'throttle' };
  }
  if (action !== undefined && action !== 'postcopy') {
    refuse(`--post-copy ${postCopy} cannot go with --on-no-converge ${action}`, 'With post-copy the answer to a task that does not converge is post-copy itself: drop --on-no-converge (or give postcopy).');
  }
  if (restore === 'eager') refuse(`--post-copy ${postCopy} needs a lazy restore, not --restore eager`, 'Drop --restore eager (post-copy resumes the copy before the dest holds its memory), or use --post-copy off.');
  if (noPrecopy) refuse(`--post-copy ${postCopy} cannot go with --no-precopy`, 'Post-copy follows at least round 0 of pre-copy: drop --no-precopy, or use --post-copy off.');
  return { postCopy, onNoConverge: 'postcopy' };
}

function trackerChoice(v: string | undefined): TrackerChoice {
  if (v === undefined) return 'auto';
  if (v === 'auto' || v === 'soft-dirty' || v === 'uffd-wp' || v === 'hash') return v;
  throw new FerryError('BAD_ARGUMENT', { message: `--tracker must be auto, soft-dirty, uffd-wp or hash (got "${v}")`, hint: 'auto picks the best tracker this kernel supports.' });
}
