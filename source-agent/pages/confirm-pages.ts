/**
 * The fill of a lazy restore, the source's half: every page the final delta took on the tracker's word (the
 * manifests' unconfirmed bits) is read from the frozen original, hashed and compared with its manifest hash;
 * the dest is told "confirmed" for a matching run and sent the original's bytes for a page that differs. The
 * pages the restored task waits for (FillWanted) go first, ahead of the sweep. The dest says done once every
 * page is in its copy; only then may the original die. This keeps the guarantee of the read-back the eager
 * restore does inside the freeze (tracking decides what is sent, never what is trusted), after the resume.
 * Post-copy: the dest has no bytes at all of the manifests' remote pages; each is sent as the original's bytes
 * (wanted first, the rest by the sweep). The frozen original is then the only full copy: if it is gone while
 * pages are still owed, the fill ends with ORIGINAL_LOST (the copy on the dest can never be completed).
 *
 * Each answered chunk is one request; its with_data bitmap says which pages carry bytes (post-copy answers
 * many scattered pages with bytes). The dest's FillReady marks pages its pager has from an earlier call, so the
 * sweep skips them. The sweep goes in chunks of SWEEP_CHUNK_PAGES and keeps at most FILL_WINDOW_BYTES unacked
 * (a dest that sends no FillAck, from before them, is not held to the window): a want waits behind little.
 *
 * One call at a time, one request in flight (each write waits for the stream's drain), the wants queue bounded:
 * nothing here grows with what the dest sends. A call that breaks is opened again (the sweep starts over: the
 * dest ignores what it has) for as long as the patience lasts from the last sign of life.
 */
import { FerryError, SystemCallError } from '../../shared/errors/ferry-error.js';
import type { Logger } from '../../shared/logging/logger.js';
import { hashPages } from '../../shared/native/addon.js';
import { describePageAddresses } from '../../shared/kernel/process-memory.js';
import { bitAt } from '../../shared/pages/page-bitmap.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import type { FillCall, FillCallHandlers } from '../fill-call.js';
import type { FillManifest } from '../migration/fill-manifests.js';

/** Pages per FillRequest at most (the proto's bound). */
export const FILL_CHUNK_PAGES = 1024;
/** Pages per request of the sweep: a want that arrives meanwhile waits behind 1 MiB (4 KiB pages) at most. */
export const SWEEP_CHUNK_PAGES = 256;
/**
 * Page bytes the sweep keeps on the way at most (sent, not yet acked by the dest: FillAck). Without it the sweep
 * fills the socket buffers and a shaper's queue (50 ms of a tbf), and every fault's answer waits behind them.
 * 2 MiB is ~17 ms of a 1 Gbit/s link and more than its round trip carries, so the push still fills the link.
 */
export const FILL_WINDOW_BYTES = 2 * 1024 * 1024;
/** Wanted ranges queued at most; a dest that asks for more than this at once is not answering in step. */
const MAX_QUEUED_WANTS = 4096;
/** Pages that differ logged one by one at most (then counted only). */
const MAX_LOGGED_REPLACED = 32;
const REACHABLE_WAIT_MS = 2_000;
/** How long a failed write waits for the call's end to learn why. */
const END_WAIT_MS = 1_000;
/**
 * A call after the first waits this long at most for the dest's first event before it sweeps: the dest's
 * FillReady comes first, and a sweep begun before it would send again what the pager has (post-copy: bytes).
 */
export const READY_WAIT_MS = 1_000;

/** Reads pages of a frozen process of the original (host pid), as SourceHost.readPages. */
export type OriginalPageReader = (hostPid: number, firstPage: number, count: number) => Iterable<{ data: Buffer; pages: Float64Array; unreadable: readonly number[] }>;

/**
 * `read`, only while `isOriginal(pid)` holds before the read and after each chunk (a pid that is another process
 * after a chunk was another one during it: it never becomes the original again): else ORIGINAL_LOST. A pid the
 * kernel gave to a new process must never have its memory sent as the copy's pages.
 */
export function whileOriginal(read: OriginalPageReader, isOriginal: (hostPid: number) => boolean): OriginalPageReader {
  const lost = (pid: number): FerryError =>
    new FerryError('ORIGINAL_LOST', { phase: 'fill', side: 'source', sourceState: 'gone', detail: `process ${pid} of the original is gone or is another process now` });
  return function* (pid, first, count) {
    if (!isOriginal(pid)) throw lost(pid);
    for (const c of read(pid, first, count)) {
      if (!isOriginal(pid)) throw lost(pid);
      yield c;
    }
  };
}

export interface ConfirmOptions {
  migrationId: string;
  epoch: string;
  manifests: readonly FillManifest[];
  pageSize: number;
  readPages: OriginalPageReader;
  log: Logger;
  signal: AbortSignal;
  /**
   * The sweep waits for this (the Commit's answer): before it only the wants are answered. The call is opened
   * beside the Restore because criu's restorer itself may fault on a lazy page (the stack it builds the task's
   * signal frame on, its TLS), which the pager serves only once confirmed.
   */
  sweepAfter?: Promise<void>;
  /** The error to end with when the original is gone while pages are still owed (names the copy on the dest). */
  lost?: (cause: unknown) => FerryError;
  /** The sweep waits this long at most for the dest's first event (its FillReady); default 0. */
  readyWaitMs?: number;
  /** No Fill call of this session was ever opened before (by anyone): the first call can get no FillReady. */
  freshSession?: boolean;
  /**
   * Post-copy: every held page is unconfirmed whatever the tracker said, so pages that differ are the task's
   * writes since pre-copy read them, expected, not a tracker's miss: logged at debug only.
   */
  postCopy?: boolean;
}

export interface FillResult {
  done: m.FillDone;
  /** Unconfirmed pages whose hash matched (confirmed without bytes). */
  confirmedPages: number;
  /** Pages whose bytes differed from the manifest: the original's bytes were sent. */
  replacedPages: number;
  /** Pages the dest asked for (wanted) before the sweep reached them. */
  wantedPages: number;
  /** Post-copy: remote pages sent (the dest had no bytes of them). */
  remotePages: number;
  /** Bytes of page data sent: the successful call's (confirmPages), or over every call (fillUntilDone). */
  dataBytes: number;
  /** Fill calls opened (more than one: the stream broke and was opened again). */
  calls: number;
}

export type FillOutcome =
  | { kind: 'done'; result: FillResult }
  /** The dest's pager failed; the dest killed its copy (FILL_FAILED): the original must be thawed. */
  | { kind: 'failed'; error: FerryError }
  /** No answer within the patience: the original stays frozen, the fill is for a resolver to finish. */
  | { kind: 'unanswered'; error: FerryError }
  /** ORIGINAL_LOST: the frozen original is gone while the dest still lacks pages; nothing can finish the fill. */
  | { kind: 'lost'; error: FerryError };

interface TaskState {
  m: FillManifest;
  pages: number;
  /** Manifest index of the first page of each run. */
  runIndex: number[];
  /** Pages answered on this call, so that neither the sweep nor a repeated want answers one twice. */
  answered: Uint8Array;
}

interface Want {
  task: number;
  first: number;
  count: number;
  bytes: boolean;
}


/**
 * Runs the fill until the dest says done or failed, opening the call again when it breaks; `patienceMs` bounds
 * the time since the last event from the dest. Throws only what no reconnect mends (the original unreadable).
 */
export async function fillUntilDone(
  dest: { fill(h: FillCallHandlers, signal: AbortSignal): FillCall; reachable(timeoutMs: number): Promise<boolean> },
  o: ConfirmOptions & { patienceMs: number; unanswered: (cause: unknown) => FerryError },
): Promise<FillOutcome> {
  let alive = Date.now();
  let last: unknown;
  let calls = 0;
  // Every call's bytes count: a call that broke still sent them.
  const sent = { dataBytes: 0 };
  for (let attempt = 1; ; attempt++) {
    if (Date.now() - alive >= o.patienceMs || o.signal.aborted) return { kind: 'unanswered', error: o.unanswered(last) };
    if (!(await dest.reachable(REACHABLE_WAIT_MS))) {
      last = new Error('the dest is unreachable');
      continue; // reachable() waited: no busy loop
    }
    calls++;
    try {
      // Each call answers every page from scratch: the figures are the successful call's.
      // Bounded by the patience too: the wait is silence, and the call's watchdog ends a silent call.
      const readyWaitMs = calls === 1 && o.freshSession ? 0 : Math.min(READY_WAIT_MS, o.patienceMs / 4);
      const r = await confirmPages((h) => dest.fill(h, o.signal), { ...o, readyWaitMs }, { onAlive: () => (alive = Date.now()), idleMs: Math.max(1, o.patienceMs - (Date.now() - alive)), sent });
      return { kind: 'done', result: { ...r, dataBytes: sent.dataBytes, calls } };
    } catch (e) {
      if (e instanceof FerryError && e.key === 'FILL_FAILED') return { kind: 'failed', error: e };
      if (e instanceof FerryError && e.key === 'ORIGINAL_LOST') return { kind: 'lost', error: e };
      if (e instanceof FerryError && e.key === 'MEMORY_READ_FAILED') throw e;
      // The dest refuses what we send (a bug, or a dest of another release): asking again sends the same. The
      // original stays frozen for an operator to look at, at once rather than after the patience.
      if (e instanceof FerryError && e.key === 'REQUEST_INVALID') {
        o.log.error('the dest refuses the fill requests: not asking again', { err: e });
        return { kind: 'unanswered', error: o.unanswered(e) };
      }
      last = e;
      o.log.warn('fill call broke: opening it again', { attempt, err: e });
      await new Promise((r) => setTimeout(r, Math.min(2_000, 200 * attempt)));
    }
  }
}

/**
 * One Fill call from its first request to the dest's done. Throws the call's end when it is not a done
 * (FILL_FAILED from the dest, or the break). `onAlive` hears every sign of life (an event, a write the stream
 * took); after `idleMs` without one the call is dropped (a dest that hangs without closing the stream).
 */
export async function confirmPages(
  open: (h: FillCallHandlers) => FillCall,
  o: ConfirmOptions,
  life: { onAlive?: () => void; idleMs?: number; sent?: { dataBytes: number } } = {},
): Promise<Omit<FillResult, 'calls'>> {
  let lastAlive = Date.now();
  const alive = (): void => {
    lastAlive = Date.now();
    life.onAlive?.();
  };
  const totals = { replacedPages: 0, confirmedPages: 0, wantedPages: 0, remotePages: 0, dataBytes: 0 };
  const tasks = new Map<number, TaskState>();
  for (const man of o.manifests) {
    const runIndex: number[] = [];
    let n = 0;
    for (const c of man.runs.counts) {
      runIndex.push(n);
      n += c;
    }
    tasks.set(man.task, { m: man, pages: n, runIndex, answered: new Uint8Array(Math.ceil(n / 8)) });
  }
  const wants: Want[] = [];
  let done: m.FillDone | undefined;
  let over: { error: FerryError | undefined } | undefined;
  let wake: (() => void) | undefined;
  const poke = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  let heard = false;
  /** This call's data bytes written, and the most the dest has acked (undefined: it sends no acks). */
  let written = 0;
  let acked: number | undefined;
  const call = open({
    event: (e) => {
      alive();
      heard = true;
      if (e.wanted) {
        const w = e.wanted;
        const t = tasks.get(w.task);
        const first = Number(w.firstIndex);
        if (!t || w.count < 1 || first + w.count > t.pages) {
          o.log.error('the dest wants pages outside the manifests: ignored', { task: w.task, firstIndex: w.firstIndex, count: w.count });
          return;
        }
        if (wants.length >= MAX_QUEUED_WANTS) {
          call.cancel(); // the call is started again, with an empty queue
          return;
        }
        wants.push({ task: w.task, first, count: w.count, bytes: w.bytes });
      } else if (e.ready) {
        const t = tasks.get(e.ready.task);
        // Pages the dest's pager has from an earlier call of this fill: the sweep skips them.
        if (!t || e.ready.pages.length !== t.answered.length) {
          o.log.error('the dest\'s ready pages do not fit the manifests: ignored', { task: e.ready.task, bytes: e.ready.pages.length });
          return;
        }
        for (let i = 0; i < t.answered.length; i++) t.answered[i]! |= e.ready.pages[i]!;
      } else if (e.ack) acked = Math.max(acked ?? 0, Number(e.ack.dataBytes));
      else if (e.done) done = e.done;
      else if (e.progress) o.log.debug('fill progress', { filledPages: e.progress.filledPages, totalPages: e.progress.totalPages, faults: e.progress.faults });
      poke();
    },
    end: (error) => {
      over = { error };
      poke();
    },
  });
  const hashes = Buffer.allocUnsafe(FILL_CHUNK_PAGES * HASH_BYTES);
  let logged = 0;
  const base = { migrationId: o.migrationId, epoch: o.epoch };
  const send = async (task: number, first: number, count: number, data: Buffer, withData?: Buffer): Promise<void> => {
    written += data.length;
    await call.write({ ...base, task, firstIndex: String(first), count, data, ...(withData && { withData }) });
    totals.dataBytes += data.length;
    if (life.sent) life.sent.dataBytes += data.length;
    alive();
  };
  /** The frozen original's pages; ORIGINAL_LOST once it is gone (pages are still owed: the copy waits on them). */
  const readOriginal = function* (t: TaskState, firstPage: number, count: number): Generator<{ data: Buffer; pages: Float64Array; unreadable: readonly number[] }> {
    try {
      yield* o.readPages(t.m.hostPid, firstPage, count);
    } catch (e) {
      if ((e instanceof SystemCallError && e.errnoName === 'ESRCH') || (e instanceof FerryError && e.key === 'ORIGINAL_LOST')) {
        throw o.lost?.(e) ?? new FerryError('ORIGINAL_LOST', { phase: 'fill', side: 'source', sourceState: 'gone', detail: `process ${t.m.hostPid} of the original is gone`, cause: e });
      }
      throw e;
    }
  };
  // The watchdog: every wait here (an event, a drain) ends when the call does, and this ends a silent call.
  const idleMs = life.idleMs ?? Infinity;
  const watchdog = Number.isFinite(idleMs)
    ? setInterval(() => {
        if (Date.now() - lastAlive >= idleMs) call.cancel();
      }, Math.max(10, Math.min(1_000, idleMs / 4)))
    : undefined;

  /**
   * Answers pages [first, first + count) of `t` (inside one run, <= FILL_CHUNK_PAGES): one request per chunk
   * the reader gives, each page confirmed (its hash matches) or sent as the original's bytes (it differs, it is
   * remote, or the dest asked for bytes), the two kinds mixed in the request's with_data bitmap.
   */
  const answer = async (t: TaskState, run: number, first: number, count: number, bytes: boolean): Promise<void> => {
    const firstPage = t.m.runs.starts[run]! + (first - t.runIndex[run]!);
    let at = first; // the next manifest index to answer
    for (const c of readOriginal(t, firstPage, count)) {
      if (c.unreadable.length > 0) {
        throw new FerryError('MEMORY_READ_FAILED', { phase: 'fill', side: 'source', sourceState: 'frozen', detail: `task ${t.m.task}: pages at ${describePageAddresses(c.unreadable)} of the frozen original cannot be read` });
      }
      const n = c.pages.length;
      if (at + n !== first + (c.pages[n - 1]! - firstPage) + 1) throw new FerryError('INTERNAL', { phase: 'fill', side: 'source', detail: 'the page reader skipped pages' });
      hashPages(c.data, n, o.pageSize, hashes);
      // Page k of the chunk is manifest index at + k.
      const withData = Buffer.alloc(Math.ceil(n / 8));
      let withBytes = 0;
      for (let k = 0; k < n; k++) {
        const i = at + k;
        const remote = t.m.remote.length > 0 && bitAt(t.m.remote, i);
        const differs = !remote && hashes.compare(t.m.hashes, i * HASH_BYTES, (i + 1) * HASH_BYTES, k * HASH_BYTES, (k + 1) * HASH_BYTES) !== 0;
        const firstTime = !bitAt(t.answered, i);
        t.answered[i >> 3]! |= 1 << (i & 7);
        if (bytes || remote || differs) {
          withData[k >> 3]! |= 1 << (k & 7);
          withBytes++;
        } else if (firstTime) totals.confirmedPages++;
        if (remote && firstTime) totals.remotePages++;
        if (differs && !bytes && firstTime) {
          totals.replacedPages++;
          if (logged++ < MAX_LOGGED_REPLACED) o.log[o.postCopy ? 'debug' : 'warn']('a page differs from what the dest holds: sent from the original', { task: t.m.task, page: c.pages[k], index: i });
        }
      }
      // Copied: the reader's buffer is overwritten by its next chunk. All or none: the old form (no bitmap).
      let data = Buffer.alloc(0);
      if (withBytes === n) data = Buffer.from(c.data.subarray(0, n * o.pageSize));
      else if (withBytes > 0) {
        data = Buffer.allocUnsafe(withBytes * o.pageSize);
        let d = 0;
        for (let k = 0; k < n; k++) if (bitAt(withData, k)) d += c.data.copy(data, d, k * o.pageSize, (k + 1) * o.pageSize);
      }
      await send(t.m.task, at, n, data, withBytes > 0 && withBytes < n ? withData : undefined);
      at += n;
    }
  };

  /** Splits [first, first + count) of a task at its runs and at FILL_CHUNK_PAGES. */
  const answerRange = async (t: TaskState, first: number, count: number, bytes: boolean): Promise<void> => {
    let run = runAt(t, first);
    for (let at = first; at < first + count; ) {
      while (t.runIndex[run]! + t.m.runs.counts[run]! <= at) run++;
      const n = Math.min(first + count - at, t.runIndex[run]! + t.m.runs.counts[run]! - at, FILL_CHUNK_PAGES);
      await answer(t, run, at, n, bytes);
      at += n;
    }
  };

  try {
    // The first request names the session (count 0: nothing confirmed yet); the dest answers with wants.
    await send(0, 0, 0, Buffer.alloc(0));
    const readyBy = Date.now() + (o.readyWaitMs ?? 0);
    const sweep = sweepRanges(tasks);
    let swept = false;
    let sweeping = o.sweepAfter === undefined;
    void o.sweepAfter?.then(() => {
      sweeping = true;
      poke();
    });
    for (;;) {
      if (done) break;
      if (over) throw over.error ?? new FerryError('DEST_UNREACHABLE', { phase: 'fill', side: 'dest', detail: 'the dest ended the Fill call before the fill was done' });
      const w = wants.shift();
      if (w) {
        const t = tasks.get(w.task)!;
        // A want that crossed our answer on the wire is answered already (one call is one ordered stream);
        // one for bytes (the dest's copy is damaged) always gets them.
        let from = w.first;
        const end = w.first + w.count;
        if (!w.bytes) while (from < end && bitAt(t.answered, from)) from++;
        if (from < end) {
          totals.wantedPages += end - from;
          await answerRange(t, from, end - from, w.bytes);
        }
        continue;
      }
      if (!swept && sweeping && !heard && Date.now() < readyBy) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, readyBy - Date.now());
        });
        clearTimeout(timer);
        continue;
      }
      if (!swept && sweeping && acked !== undefined && written - acked > FILL_WINDOW_BYTES) {
        await new Promise<void>((resolve) => (wake = resolve)); // an ack, a want or the end wakes it
        continue;
      }
      if (!swept && sweeping) {
        // Reads and writes that never block would starve the call's events: let the wants in between chunks.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (done || over || wants.length > 0) continue;
        const next = sweep.next();
        if (next.done) {
          swept = true;
          o.log.debug('fill: every unconfirmed page answered; waiting for the dest', { confirmedPages: totals.confirmedPages, replacedPages: totals.replacedPages });
        } else {
          await answerRange(next.value.t, next.value.first, next.value.count, false);
        }
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
    }
    call.end();
    return { done, confirmedPages: totals.confirmedPages, replacedPages: totals.replacedPages, wantedPages: totals.wantedPages, remotePages: totals.remotePages, dataBytes: totals.dataBytes };
  } catch (e) {
    // The call's own end says why a write failed (FILL_FAILED rather than "the call has ended"): it may come a
    // moment after the write's rejection.
    const ours = e instanceof FerryError && (e.key === 'MEMORY_READ_FAILED' || e.key === 'ORIGINAL_LOST' || e.key === 'INTERNAL');
    if (!over && !ours) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, END_WAIT_MS);
      });
      clearTimeout(timer);
    }
    // The call's own end explains a failed write; our cancel below would only hide what went wrong.
    const theirs = over?.error;
    call.cancel();
    throw ours ? e : (theirs ?? e);
  } finally {
    clearInterval(watchdog);
  }
}

function runAt(t: TaskState, index: number): number {
  let lo = 0;
  let hi = t.runIndex.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (t.runIndex[mid]! <= index) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The unconfirmed pages (remote ones included) not answered yet, as ranges inside one run, in manifest order. */
function* sweepRanges(tasks: Map<number, TaskState>): Generator<{ t: TaskState; first: number; count: number }> {
  for (const t of tasks.values()) {
    const bits = t.m.unconfirmed;
    if (bits.length === 0) continue;
    for (let run = 0; run < t.runIndex.length; run++) {
      const end = t.runIndex[run]! + t.m.runs.counts[run]!;
      let i = t.runIndex[run]!;
      while (i < end) {
        // Whole bytes of nothing to do are skipped at once: most of a big task is confirmed or already answered.
        if ((i & 7) === 0 && i + 8 <= end && (bits[i >> 3]! & ~t.answered[i >> 3]! & 0xff) === 0) {
          i += 8;
          continue;
        }
        if (!bitAt(bits, i) || bitAt(t.answered, i)) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < end && j - i < SWEEP_CHUNK_PAGES && bitAt(bits, j) && !bitAt(t.answered, j)) j++;
        yield { t, first: i, count: j - i };
        i = j;
      }
    }
  }
}
