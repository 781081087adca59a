/**
 * What the benchmark measures: the links, the cases (link, RSS, dirty rate) and the ways of moving a task,
 * plus a rough time model used to print an estimate at start and to fit the repetitions into the time budget.
 */

export type LinkId = '1gbit' | '100mbit' | 'unshaped';

export interface Link {
  id: LinkId;
  label: string;
  /** `tc ... tbf rate` on the src's egress; undefined = no qdisc (the raw veth). */
  tbfRate: string | undefined;
  /** Payload rate a single TCP stream gets (notes/criu-lab.md §5), for the time model only. */
  bytesPerSec: number;
}

export const LINKS: Record<LinkId, Link> = {
  '1gbit': { id: '1gbit', label: '1 Gbit/s', tbfRate: '1gbit', bytesPerSec: 117e6 },
  '100mbit': { id: '100mbit', label: '100 Mbit/s', tbfRate: '100mbit', bytesPerSec: 11.7e6 },
  // The veth carries ~4 Gbit/s in one stream here; what limits a migration there is CPU (hashing, CRIU, tar).
  unshaped: { id: 'unshaped', label: 'unshaped veth', tbfRate: undefined, bytesPerSec: 300e6 },
};

export interface BenchCase {
  /** e.g. `1gbit-256m-d8`: stable, used in the JSON and to find a case's runs. */
  id: string;
  link: Link;
  mib: number;
  dirtyMibPerSec: number;
  /** Only with --large. */
  large: boolean;
}

export type MethodId = 'ferry-live-lazy' | 'ferry-live-eager' | 'ferry-stop-copy' | 'criu-stop-copy' | 'ferry-postcopy' | 'ferry-postcopy-always';
/** The id of Ferry's pre-copy method before issue 11 split it by restore mode (old results files, `--methods`). */
export const LEGACY_LIVE = 'ferry-live';

export interface Method {
  id: MethodId;
  label: string;
  /** Extra `ferry migrate` flags (none for plain CRIU). */
  ferryFlags: readonly string[];
  /** Is this a stop-and-copy (the task is frozen for the whole transfer)? */
  stopAndCopy: boolean;
  /** How the dest restores: Ferry's pager pages the copy in after the resume (lazy), or criu restores it all
   * before (eager; plain CRIU's restore is eager too). */
  restore: 'lazy' | 'eager';
  /** Ferry's --post-copy (issue 12), when the method asks for it. */
  postCopy?: 'auto' | 'always';
}

// Throttle rather than freeze with a large dirty set when pre-copy cannot converge (the 128 MiB/s cases).
const LIVE = ['--on-no-converge', 'throttle'] as const;

export const METHODS: readonly Method[] = [
  { id: 'ferry-live-lazy', label: 'Ferry pre-copy, lazy', ferryFlags: [...LIVE, '--restore', 'lazy'], stopAndCopy: false, restore: 'lazy' },
  { id: 'ferry-live-eager', label: 'Ferry pre-copy, eager', ferryFlags: [...LIVE, '--restore', 'eager'], stopAndCopy: false, restore: 'eager' },
  // The stop-and-copy baseline stays eager: it is what "stop-and-copy downtime" means in the targets.
  { id: 'ferry-stop-copy', label: 'Ferry stop-and-copy', ferryFlags: ['--no-precopy', '--restore', 'eager'], stopAndCopy: true, restore: 'eager' },
  { id: 'criu-stop-copy', label: 'plain CRIU', ferryFlags: [], stopAndCopy: true, restore: 'eager' },
  // Issue 12: resume on the dest when pre-copy does not converge (auto) or right after round 0 (always); the pages
  // the dest lacks come from the frozen original after the resume. Only `--post-copy` runs them.
  { id: 'ferry-postcopy', label: 'Ferry post-copy (auto)', ferryFlags: ['--post-copy', 'auto', '--restore', 'lazy'], stopAndCopy: false, restore: 'lazy', postCopy: 'auto' },
  {
    id: 'ferry-postcopy-always',
    label: 'Ferry post-copy (always)',
    ferryFlags: ['--post-copy', 'always', '--restore', 'lazy'],
    stopAndCopy: false,
    restore: 'lazy',
    postCopy: 'always',
  },
];

/** Which run: the matrix (`--quick`, the full one, or narrowed), `--lazy-vs-eager` (issue 11), `--post-copy` (issue 12). */
export type BenchPlan = 'matrix' | 'lazy-vs-eager' | 'post-copy';

/** `--post-copy`: the two post-copy methods beside today's throttle path and the stop-and-copy baseline. */
export const POST_COPY_METHODS: readonly MethodId[] = ['ferry-postcopy', 'ferry-postcopy-always', 'ferry-live-lazy', 'ferry-stop-copy'];

/** The methods a plan runs before `--methods` narrows them: post-copy only in its own run (the matrix stays issue 11's). */
export function planMethods(plan: BenchPlan): MethodId[] {
  return plan === 'post-copy' ? [...POST_COPY_METHODS] : METHODS.filter((m) => m.postCopy === undefined).map((m) => m.id);
}

export function isMethodId(id: string): id is MethodId {
  return METHODS.some((m) => m.id === id);
}

export function methodById(id: MethodId): Method {
  const m = METHODS.find((x) => x.id === id);
  if (!m) throw new Error(`unknown method ${id}`);
  return m;
}

/** `--methods` ids: the new ones, or `ferry-live` for both pre-copy methods (lazy and eager). */
export function parseMethodIds(list: string): MethodId[] {
  const out: MethodId[] = [];
  for (const raw of list.split(',').map((m) => m.trim())) {
    const ids: string[] = raw === LEGACY_LIVE ? ['ferry-live-lazy', 'ferry-live-eager'] : [raw];
    for (const id of ids) {
      if (!isMethodId(id)) throw new Error(`unknown method ${raw} (methods: ${METHODS.map((m) => m.id).join(', ')}; ${LEGACY_LIVE} = both pre-copy ones)`);
      if (!out.includes(id)) out.push(id);
    }
  }
  return out;
}

/**
 * The method of a recorded run. Runs of an old results file say `ferry-live`: they are lazy when Ferry's summary
 * says so (a run after lazy restore became the default), eager otherwise (before issue 11 every restore was).
 */
export function recordedMethod(method: string, restoreMode: string | undefined): MethodId {
  if (method === LEGACY_LIVE) return restoreMode === 'lazy' ? 'ferry-live-lazy' : 'ferry-live-eager';
  if (!isMethodId(method)) throw new Error(`unknown method ${method} in a results file`);
  return method;
}

function makeCase(link: LinkId, mib: number, dirtyMibPerSec: number, large = false): BenchCase {
  const size = mib % 1024 === 0 ? `${mib / 1024}g` : `${mib}m`;
  return { id: `${link}-${size}-d${dirtyMibPerSec}`, link: LINKS[link], mib, dirtyMibPerSec, large };
}

/** The matrix of issue 3, cheapest first within each link. The order is also the order of a repetition. */
export function fullCases(large: boolean): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const mib of [256, 1024]) for (const d of [0, 8, 32, 128]) cases.push(makeCase('1gbit', mib, d));
  for (const mib of [256, 1024]) cases.push(makeCase('unshaped', mib, 8));
  for (const d of [0, 8, 128]) cases.push(makeCase('100mbit', 256, d));
  if (large) cases.push(makeCase('1gbit', 4096, 8, true));
  return cases;
}

export function quickCases(): BenchCase[] {
  return [makeCase('1gbit', 256, 8)];
}

/** `--lazy-vs-eager`: the two cases issue 11's targets are defined on (1 Gbit/s, 8 MiB/s, 256 MiB and 1 GiB). */
export function lazyVsEagerCases(): BenchCase[] {
  return [makeCase('1gbit', 256, 8), makeCase('1gbit', 1024, 8)];
}

/** `--post-copy`: issue 12's cases (1 Gbit/s, 128 MiB/s dirtying: pre-copy cannot converge; 256 MiB and 1 GiB). */
export function postCopyCases(): BenchCase[] {
  return [makeCase('1gbit', 256, 128), makeCase('1gbit', 1024, 128)];
}

/**
 * The methods a case runs. `--lazy-vs-eager`: lazy and eager everywhere, the stop-and-copy baselines only where a
 * target divides by them (1 GiB). `--post-copy`: every method at both sizes (each target compares with the
 * stop-and-copy total of its own size). Otherwise every method, except eager pre-copy on the 100 Mbit/s link: its
 * restore is the one the 1 Gbit/s cases measure, the link dominates there, and those are the longest runs of the
 * matrix (leaving them out buys the target cases their repetitions within the budget).
 */
export function methodsForCase(c: Pick<BenchCase, 'mib' | 'link'>, methods: readonly MethodId[], plan: BenchPlan): MethodId[] {
  if (plan === 'post-copy') return [...methods];
  if (plan === 'lazy-vs-eager') return methods.filter((m) => !methodById(m).stopAndCopy || c.mib === 1024);
  return methods.filter((m) => m !== 'ferry-live-eager' || c.link.id !== '100mbit');
}

export function formatMib(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;
}

/** Can pre-copy catch up with the writes without help? (The dirty rate against the link's payload rate.) */
export function converges(c: Pick<BenchCase, 'dirtyMibPerSec' | 'link'>): boolean {
  return c.dirtyMibPerSec * 2 ** 20 < 0.8 * c.link.bytesPerSec;
}

// ---------------------------------------------------------------------------------------------------------
// Time model (seconds), calibrated on this VM class (2 vCPU, first touch slow); the runner rescales it by
// what it measures as it goes.

/** Start (fill), the 2 s idle window, verify, stop: the same for every method. */
function fixedSeconds(c: BenchCase): number {
  return 3.7 + c.mib / 1000;
}

export function estimateRunSeconds(c: BenchCase, method: MethodId): number {
  const transfer = (c.mib * 2 ** 20 * 1.02) / c.link.bytesPerSec;
  // Ferry's eager freeze: dump, final delta, rebuild and restore all touch the whole image (~8 s per GiB here).
  const ferryFreeze = 0.3 + c.mib / 130;
  // Lazy: a short freeze, then the fill (the source confirms every trusted page, the pager copies it in) before
  // `ferry migrate` returns; guessed at ~250 MiB/s here for both together.
  const ferryLazy = 0.5 + c.mib / 250;
  switch (method) {
    case 'ferry-live-lazy':
    case 'ferry-live-eager': {
      const ratio = (c.dirtyMibPerSec * 2 ** 20) / c.link.bytesPerSec;
      // Converging: later rounds carry what was written meanwhile (fitted: 1 + 1.5 x dirty/link rate of round 0).
      // Not converging: rounds until the throttle is exhausted, each re-sending most of the memory.
      const precopy = converges(c) ? transfer * (1 + 1.5 * ratio) : transfer * (c.link.id === '100mbit' ? 12 : 7);
      return fixedSeconds(c) + 1 + precopy + (method === 'ferry-live-lazy' ? ferryLazy : ferryFreeze);
    }
    case 'ferry-postcopy':
    case 'ferry-postcopy-always': {
      // auto: the rounds until the policy sees no convergence (~3 of them re-sending most of the memory); always:
      // round 0 only. Then a short freeze and the fill, which carries the pages dirty since their last round
      // (most of the task at 128 MiB/s) over the link.
      const precopy = method === 'ferry-postcopy' && !converges(c) ? transfer * 3 : transfer;
      return fixedSeconds(c) + 1 + precopy + 0.5 + transfer;
    }
    case 'ferry-stop-copy':
      return fixedSeconds(c) + 1 + transfer + ferryFreeze;
    case 'criu-stop-copy':
      return fixedSeconds(c) + transfer + 0.3 + c.mib / 500;
  }
}

export function estimateCaseSeconds(c: BenchCase, methods: readonly MethodId[]): number {
  return methods.reduce((s, m) => s + estimateRunSeconds(c, m), 0);
}

/** Cases the targets are computed on: their extra repetitions come first. */
export const PRIORITY_CASES: readonly string[] = ['1gbit-256m-d8', '1gbit-1g-d8', '1gbit-256m-d0', '1gbit-1g-d0'];

/**
 * Repetitions per case within budgetS: every case at least once (or as many times as `done` says it ran);
 * then the remaining repetitions of the priority cases; then, repetition by repetition, the other cases,
 * cheapest first, as long as the estimate fits. With `done`, budgetS is the time left and only the runs
 * still to do count against it.
 */
export function planRepetitions(
  cases: readonly BenchCase[],
  seconds: readonly number[],
  reps: number,
  budgetS: number,
  done?: ReadonlyMap<string, number>,
): Map<string, number> {
  const plan = new Map(cases.map((c) => [c.id, done ? (done.get(c.id) ?? 0) : 1]));
  let total = done ? 0 : seconds.reduce((a, b) => a + b, 0);
  const items = cases.map((c, i) => ({ c, s: seconds[i]! }));
  const priority = items.filter((x) => PRIORITY_CASES.includes(x.c.id)).sort((a, b) => PRIORITY_CASES.indexOf(a.c.id) - PRIORITY_CASES.indexOf(b.c.id));
  const others = items.filter((x) => !PRIORITY_CASES.includes(x.c.id)).sort((a, b) => a.s - b.s);
  for (const group of [priority, others]) {
    for (let r = 1; r <= reps; r++) {
      for (const { c, s } of group) {
        if (plan.get(c.id) === r - 1 && total + s <= budgetS) {
          plan.set(c.id, r);
          total += s;
        }
      }
    }
  }
  return plan;
}
