/**
 * The dest agent's hold on one restore's pager (native/pager/ferry-pager.c): it started it (or, after a
 * restart, adopts it by pid and start time), talks to it over its control socket, relays the source's
 * confirmations to it and its wants to the source (keeping the wants not answered yet, for the next Fill call, and
 * what it forwarded: forwarded-pages.ts), and learns how the fill ended. The pager outlives this
 * agent; the link does not. A pager that is gone without having said "filled" failed: its guardian killed
 * the copy, and the link makes sure of it (by the copy's pid and start time) before it reports FILL_FAILED.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PAGE_SIZE } from '../../shared/criu/pagemap-image.js';
import { signalTree } from '../../shared/kernel/signal-tree.js';
import type { Logger } from '../../shared/logging/logger.js';
import type { FillBounds } from './fill-messages.js';
import { ForwardedPages } from './forwarded-pages.js';
import { connectPager, type PagerControl, type PagerStats, type PagerWant } from './pager-control.js';
import { abortPager, pagerAlive, pagerBinary, readPagerStatus, startPager, type PagerHandle } from './pager-process.js';

/** Files of one session's pager, under `<session>/pager/` (the lazy-pages socket is CRIU's, in the images dir). */
export function pagerPaths(sessionDir: string, imagesDir: string): { dir: string; plan: string; control: string; status: string; log: string; socket: string; restoredPid: string } {
  const dir = join(sessionDir, 'pager');
  return {
    dir,
    plan: join(dir, 'plan'),
    control: join(dir, 'control.sock'),
    status: join(dir, 'status'),
    log: join(dir, 'pager.log'),
    socket: join(imagesDir, 'lazy-pages.socket'),
    restoredPid: join(sessionDir, 'restored.pid'),
  };
}

export type PagerIdentity = PagerHandle;

/** How the fill ended. */
export type FillOutcome = { kind: 'filled'; stats: PagerStats } | { kind: 'failed'; reason: string } | { kind: 'detached' };

export interface FillListener {
  want(w: PagerWant): void;
  progress(stats: PagerStats): void;
}

/**
 * Wants kept until answered, replayed to each Fill call that opens (one that broke may have taken them with it;
 * the pager re-sends its open ones only on a new control connection). Past the bound the answered ones go, then
 * the oldest: the source's sweep reaches every page anyway.
 */
const MAX_KEPT_WANTS = 65_536;
/** 30 s: a pager that runs but does not take its control connection for that long is taken as failed. */
const RECONNECT_TRIES = 300;
const RECONNECT_PAUSE_MS = 100;
const TERM_WAIT_MS = 5_000;

const wantKey = (w: PagerWant): string => `${w.task}:${w.index}:${w.count}:${w.bytes ? 1 : 0}`;

export class PagerLink {
  private control: PagerControl | undefined;
  private listener: FillListener | undefined;
  private wants: PagerWant[] = [];
  private wantKeys = new Set<string>();
  /** What went to the pager over the control connection (the FillReady of the next call). */
  readonly forwarded: ForwardedPages;
  private settle!: (o: FillOutcome) => void;
  /** Resolves once, when the pager says filled or failed, or is found gone. */
  readonly outcome: Promise<FillOutcome>;
  private ended: FillOutcome | undefined;
  /** The copy to kill if the pager failed: set once criu restore wrote its pid. */
  copy: PagerIdentity | undefined;

  private constructor(
    readonly pager: PagerIdentity,
    private readonly paths: ReturnType<typeof pagerPaths>,
    private readonly log: Logger,
    bounds: FillBounds,
  ) {
    this.outcome = new Promise((ok) => (this.settle = ok));
    this.forwarded = new ForwardedPages(bounds);
  }

  /** Starts the pager for the plan; resolves once it listens on CRIU's socket and its control socket is connected. */
  static async start(paths: ReturnType<typeof pagerPaths>, log: Logger, bounds: FillBounds, threads?: number): Promise<PagerLink> {
    const pager = await startPager({
      binary: pagerBinary(),
      planFile: paths.plan,
      socketPath: paths.socket,
      controlPath: paths.control,
      statusFile: paths.status,
      pidFile: paths.restoredPid,
      logFile: paths.log,
      threads,
    });
    const link = new PagerLink({ pid: pager.pid, startTime: pager.startTime }, paths, log, bounds);
    await link.connect();
    return link;
  }

  /** A pager a previous agent started: taken over if that very process still runs, else its status decides. */
  static async adopt(paths: ReturnType<typeof pagerPaths>, pager: PagerIdentity, copy: PagerIdentity | undefined, log: Logger, bounds: FillBounds): Promise<PagerLink> {
    const link = new PagerLink(pager, paths, log, bounds);
    link.copy = copy;
    if (pagerAlive(pager)) await link.connect();
    else await link.gone();
    return link;
  }

  private async connect(): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        const c = await connectPager(this.paths.control);
        this.control = c;
        c.on('want', (w: PagerWant) => {
          this.keep(w);
          this.listener?.want(w);
        });
        c.on('progress', (st: PagerStats) => this.listener?.progress(st));
        c.on('done', (st: PagerStats) => this.finish({ kind: 'filled', stats: st }));
        c.on('failed', (reason: string) => this.failed(reason));
        c.on('closed', (why: string) => {
          this.log.debug('pager control connection closed', { why });
          if (this.control === c) this.control = undefined;
          // Frames written but not yet read by the pager went with the connection: nothing counts as forwarded.
          if (!this.ended) this.forwarded.clear();
          if (!this.ended) void this.lostControl();
        });
        return;
      } catch (e) {
        if (!pagerAlive(this.pager)) return this.gone();
        if (i >= RECONNECT_TRIES) throw new FerryError('FILL_FAILED', { side: 'dest', phase: 'commit', detail: `the pager's control socket does not answer: ${String(e)}`, cause: e });
        await sleep(RECONNECT_PAUSE_MS);
      }
    }
  }

  /** The control connection dropped: a pager that still runs is reconnected; one that is gone is judged by its status. */
  private async lostControl(): Promise<void> {
    await sleep(RECONNECT_PAUSE_MS);
    if (this.ended) return;
    if (pagerAlive(this.pager)) {
      await this.connect().catch((e: unknown) => this.failed(String(e)));
    } else {
      await this.gone();
    }
  }

  private async gone(): Promise<void> {
    const status = await readPagerStatus(this.paths.status).catch(() => undefined);
    if (status?.state === 'filled') this.finish({ kind: 'filled', stats: status });
    else this.failed(status?.reason ? `the pager ended: ${status.reason}` : 'the pager is gone');
  }

  private finish(o: FillOutcome): void {
    if (this.ended) return;
    this.ended = o;
    this.control?.close();
    this.settle(o);
  }

  /** The copy must never run on a page it was not given: whoever noticed first, it is killed here too. */
  private failed(reason: string): void {
    if (this.ended) return;
    this.killCopy();
    this.log.error('the pager failed: the restored copy was killed', { reason, pager: this.pager.pid });
    this.finish({ kind: 'failed', reason });
  }

  /** Only that very copy (pid and start time: pagerAlive holds for any process). */
  private killCopy(): void {
    if (this.copy && pagerAlive(this.copy)) signalTree(this.copy.pid, 'SIGKILL');
  }

  /** The pager re-sends its open wants on each new control connection: kept once. */
  private keep(w: PagerWant): void {
    const key = wantKey(w);
    if (this.wantKeys.has(key)) return;
    if (this.wants.length >= MAX_KEPT_WANTS) this.setWants(this.openWants());
    if (this.wants.length >= MAX_KEPT_WANTS) this.wantKeys.delete(wantKey(this.wants.shift()!));
    this.wants.push(w);
    this.wantKeys.add(key);
  }

  private setWants(wants: PagerWant[]): void {
    this.wants = wants;
    this.wantKeys = new Set(wants.map(wantKey));
  }

  /** The pager's wants not answered yet (what was forwarded decides), in the order they came. */
  openWants(): PagerWant[] {
    return this.wants.filter((w) => !this.forwarded.answers(w));
  }

  /** The Fill stream that relays wants and progress; every want not answered yet is replayed to it first. */
  attach(listener: FillListener): () => void {
    this.listener = listener;
    this.setWants(this.openWants());
    for (const w of this.wants) listener.want(w);
    return () => {
      if (this.listener === listener) this.listener = undefined;
    };
  }

  /** Resolves once the pager has it (after a reconnect, if the control socket is down); FILL_FAILED once it failed. */
  async confirm(task: number, index: number, count: number): Promise<void> {
    await (await this.whenConnected()).confirm(task, index, count);
    this.forwarded.markConfirmed(task, index, count);
  }

  /** As confirm; returns how many of the pages were remote ones the pager had no bytes of before. */
  async replace(task: number, index: number, pages: Buffer): Promise<number> {
    await (await this.whenConnected()).replace(task, index, pages);
    return this.forwarded.markReplaced(task, index, pages.length / PAGE_SIZE);
  }

  private async whenConnected(): Promise<PagerControl> {
    // Bounded: lostControl() either reconnects or ends the link within its tries.
    for (let waited = 0; ; waited += RECONNECT_PAUSE_MS) {
      if (this.ended?.kind === 'failed') throw new FerryError('FILL_FAILED', { side: 'dest', phase: 'commit', detail: this.ended.reason });
      if (this.ended) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase: 'commit', detail: this.ended.kind === 'detached' ? 'the dest agent is stopping' : 'the fill is over' });
      if (this.control) return this.control;
      if (waited > RECONNECT_TRIES * RECONNECT_PAUSE_MS * 2) throw new FerryError('FILL_FAILED', { side: 'dest', phase: 'commit', detail: "the pager's control socket stayed down" });
      await sleep(RECONNECT_PAUSE_MS);
    }
  }

  /** Rollback before the resume (or the agent stopping with an uncommitted copy): the pager kills the copy and exits. */
  async abort(): Promise<void> {
    this.killCopy();
    if (abortPager(this.pager)) {
      for (let waited = 0; waited < TERM_WAIT_MS && pagerAlive(this.pager); waited += 50) await sleep(50);
      if (pagerAlive(this.pager)) process.kill(this.pager.pid, 'SIGKILL');
    }
    this.finish({ kind: 'failed', reason: 'aborted' });
  }

  /** Closes the control connection only: the pager goes on (the agent is stopping or restarting). */
  detach(): void {
    this.finish({ kind: 'detached' });
  }
}
