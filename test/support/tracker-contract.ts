/**
 * The tracker contract: the same scenarios and checks for every DirtyTracker, against a real task
 * (testbed/workloads/tracker-target.c). Framework-free, so that vitest runs it on the host
 * (test/integration/tracker-contract.test.ts) and the two-VM harness runs it in a guest whose kernel has
 * soft-dirty (test/vm/soft-dirty-in-vm.ts).
 *
 * "Marked" means sent: every write changes the page's bytes, so each tracker must send exactly the written pages
 * of the target's region. Pages outside the region (the target's stack, libc, stdio buffers) may be written by
 * the target itself between rounds: they are counted as extras, never failed on.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { readProcessTree } from '../../shared/kernel/process-tree.js';
import type { PageHashIndex } from '../../shared/pages/page-hash-index.js';
import { batchPageCount, readPageNumber } from '../../shared/transport/page-batch.js';
import type { DirtyTracker, TrackedTask, TrackerRoundStats } from '../../source-agent/trackers/tracker.js';

export interface ContractCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ContractReport {
  tracker: string;
  checks: ContractCheck[];
  /** Pages sent outside the region, per round (the target's own writes). */
  extras: number[];
  /** Pages read per round (bytesRead / page size). */
  readPages: number[];
}

const REGION = 4096;
const RESERVE = 512;
const SHRINK = 256;
const NEW_AREA = 64;

/** Builds the target with gcc (static when asked: the VM guests have no compiler). */
export function buildTrackerTarget(source: string, out: string, staticLink = false): void {
  execFileSync('gcc', ['-O2', ...(staticLink ? ['-static'] : []), '-o', out, source]);
}

class Target {
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | undefined;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(line);
      else this.lines.push(line);
    });
  }

  next(timeoutMs = 10_000): Promise<string> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the target did not answer')), timeoutMs);
      this.waiter = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
    });
  }

  ask(cmd: string): Promise<string> {
    this.child.stdin!.write(`${cmd}\n`);
    return this.next();
  }
}

function tasksOf(rootPid: number): TrackedTask[] {
  return (readProcessTree(rootPid)?.processes ?? []).map((p) => ({ hostPid: p.hostPid, key: p.hostPid }));
}

function range(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}

/** Runs the scenarios against a fresh tracker; never throws for a failed check (it is reported). */
export async function runTrackerContract(tracker: DirtyTracker, targetBinary: string): Promise<ContractReport> {
  const report: ContractReport = { tracker: tracker.name, checks: [], extras: [], readPages: [] };
  const check = (name: string, ok: boolean, detail: string): void => {
    report.checks.push({ name, ok, detail });
  };
  const child = spawn(targetBinary, [String(REGION), String(RESERVE)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const extraPids: number[] = [];
  const held = new Map<number, PageHashIndex>();
  const signal = new AbortController().signal;
  try {
    const target = new Target(child);
    const ready = /^ready ([0-9a-f]+)$/.exec(await target.next());
    if (!ready) throw new Error('the target did not start');
    const pid = child.pid!;
    const base = parseInt(ready[1]!, 16) / PAGE_SIZE;
    let regionPages = REGION;
    const inRegion = (p: number): boolean => p >= base && p < base + regionPages;

    /** One round over the target's tree; the pages sent, per task key. */
    const doRound = async (tasks = tasksOf(pid)): Promise<{ sent: Map<number, Set<number>>; stats: TrackerRoundStats }> => {
      const sent = new Map<number, Set<number>>();
      const stats = await tracker.round(tasks, held, (task, batch) => {
        let s = sent.get(task);
        if (!s) sent.set(task, (s = new Set()));
        for (let i = 0; i < batchPageCount(batch); i++) s.add(readPageNumber(batch.pageNumbers, i));
        return Promise.resolve();
      }, signal);
      const mine = sent.get(pid) ?? new Set<number>();
      report.extras.push([...mine].filter((p) => !inRegion(p)).length);
      report.readPages.push(stats.bytesRead / PAGE_SIZE);
      return { sent, stats };
    };
    const regionSent = (sent: Map<number, Set<number>>, task = pid): number[] => [...(sent.get(task) ?? [])].filter(inRegion).sort((a, b) => a - b);
    const same = (got: number[], want: number[]): boolean => got.length === want.length && got.every((p, i) => p === want[i]);
    const describe = (got: number[], want: number[]): string => {
      const g = new Set(got);
      const w = new Set(want);
      return `sent ${got.length}, want ${want.length}, missed ${want.filter((p) => !g.has(p)).length}, unexpected ${got.filter((p) => !w.has(p)).length}`;
    };

    // Round 0: every present page of the region.
    const r0 = await doRound();
    check('round 0 sends every present page', same(regionSent(r0.sent), range(base, REGION)), describe(regionSent(r0.sent), range(base, REGION)));

    // After a round starts, writing exactly P marks exactly P.
    const written = new Set<number>();
    while (written.size < 300) written.add(Math.floor(Math.random() * REGION));
    for (const p of written) await target.ask(`w ${p}`);
    const want = [...written].map((p) => base + p).sort((a, b) => a - b);
    const r1 = await doRound();
    check('writing exactly P marks exactly P', same(regionSent(r1.sent), want), `${describe(regionSent(r1.sent), want)}; read ${r1.stats.bytesRead / PAGE_SIZE} pages, extras ${report.extras.at(-1)}`);

    const r2 = await doRound();
    check('a round without writes sends nothing of the region', regionSent(r2.sent).length === 0, describe(regionSent(r2.sent), []));

    // VMA changes.
    const mapped = /^mapped ([0-9a-f]+)$/.exec(await target.ask(`map ${NEW_AREA}`));
    const areaBase = parseInt(mapped?.[1] ?? '0', 16) / PAGE_SIZE;
    const r3 = await doRound();
    const areaSent = [...(r3.sent.get(pid) ?? [])].filter((p) => p >= areaBase && p < areaBase + NEW_AREA).length;
    check('a new area is sent whole', areaSent === NEW_AREA, `sent ${areaSent} of ${NEW_AREA}`);

    await target.ask('grow');
    regionPages = REGION + RESERVE;
    const r4 = await doRound();
    check('a grown area sends exactly the new pages', same(regionSent(r4.sent), range(base + REGION, RESERVE)), describe(regionSent(r4.sent), range(base + REGION, RESERVE)));

    await target.ask(`shrink ${SHRINK}`);
    regionPages -= SHRINK;
    await target.ask('w 5');
    const r5 = await doRound();
    check('a shrunk area: only the written page is sent', same(regionSent(r5.sent), [base + 5]), describe(regionSent(r5.sent), [base + 5]));

    await target.ask('unmap');
    await doRound();
    const again = /^mapped ([0-9a-f]+)$/.exec(await target.ask(`map ${NEW_AREA}`));
    const againBase = parseInt(again?.[1] ?? '0', 16) / PAGE_SIZE;
    const r6 = await doRound();
    const againSent = [...(r6.sent.get(pid) ?? [])].filter((p) => p >= againBase && p < againBase + NEW_AREA).length;
    check('an area that vanished and came back is sent whole', againSent === NEW_AREA, `sent ${againSent} of ${NEW_AREA} (same address: ${againBase === areaBase})`);

    // Fork and exit.
    const forked = /^child (\d+)$/.exec(await target.ask('fork'));
    const childPid = Number(forked?.[1] ?? 0);
    extraPids.push(childPid);
    await new Promise((r) => setTimeout(r, 200)); // the child rewrites its pages 0..63
    const r7 = await doRound();
    const childRegion = regionSent(r7.sent, childPid);
    check('a forked process is sent whole', childRegion.length === regionPages, `child sent ${childRegion.length} of ${regionPages} region pages`);
    check('the parent is not resent by a fork', regionSent(r7.sent).length === 0, describe(regionSent(r7.sent), []));

    const stale = tasksOf(pid);
    process.kill(childPid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    let exitOk = true;
    let exitDetail = 'no error';
    try {
      await target.ask('w 6');
      const r8 = await doRound(stale); // still lists the dead child
      const got = regionSent(r8.sent);
      exitOk = same(got, [base + 6]);
      exitDetail = describe(got, [base + 6]);
    } catch (e) {
      exitOk = false;
      exitDetail = (e as Error).message;
    }
    check('an exited process is dropped without error', exitOk, exitDetail);
  } finally {
    for (const p of extraPids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    child.kill('SIGKILL');
    tracker.close();
  }
  return report;
}
