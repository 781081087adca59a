/**
 * Numbered fault points for tests (in the spirit of CRIU_FAULT). FERRY_FAULT is a comma-separated list of
 * `point[:action]`; it is honoured only when FERRY_TEST_FAULTS=1 is set too, so that a stray variable in a
 * production environment never breaks a migration (it is then named once in stderr and ignored). Actions:
 *   throw  (default) the step fails with INTERNAL naming the point: the caller's rollback runs
 *   kill   the process dies at once by SIGKILL: what a crash at exactly this instant leaves behind
 *   stop   the process SIGSTOPs itself: the test acts (cuts the link, kills the peer) and then SIGCONTs it
 * Each point acts once per process, the first time it is reached. Damage points (dest.corrupt-store,
 * dest.restore-fails, dest.hold-stuck) are asked with faultArmed() and damage instead, every time.
 */
import { FerryError } from './errors/ferry-error.js';

export const FAULT_POINTS = [
  // The source fails right after entering the phase: every phase's rollback is tested this way.
  'source.prepare',
  'source.precopy',
  'source.freeze',
  'source.final-delta',
  'source.restore',
  'source.commit',
  // A lazy restore's fill: the copy runs on the dest, the original frozen here (phases/fill.ts).
  'source.fill',
  // Around each call to the dest (ports.ts): before it leaves, and after its answer arrived.
  'source.before-prepare',
  'source.after-prepare',
  'source.before-upload-images',
  'source.after-upload-images',
  'source.before-restore',
  'source.after-restore',
  'source.before-commit',
  'source.after-commit',
  'source.before-abort',
  // Inside the dump: criu is running.
  'source.dump-running',
  // The commit's steps (phases/commit.ts): the lease disarmed, "committing" journaled, the original about to die.
  'source.lease-disarmed',
  'source.commit-recorded',
  'source.before-kill-original',
  // The dest, inside each call and each step of the restore (dest-service.ts).
  'dest.prepare',
  'dest.stream-pages',
  'dest.upload-images',
  'dest.rebuild',
  // A lazy restore's pager listens; criu restore has not started.
  'dest.pager-started',
  'dest.restore-running',
  'dest.restored',
  'dest.commit-recorded',
  'dest.commit-resumed',
  // Half of a journal line is on disk (journal.ts): the reader must survive a torn write.
  'source.journal-write',
  'dest.journal-write',
  // Damage: the dest corrupts one stored page before the rebuild (the hash check must refuse the restore),
  // or removes pstree.img before restoring (CRIU itself fails).
  'dest.corrupt-store',
  'dest.restore-fails',
  // Damage: the dest's opening and deletion of a restored copy's network hold fail, as a kernel refusing both would.
  'dest.hold-stuck',
  // The tracker "misses" the writes since its last round: those pages are sent as the dest held them (a lazy
  // restore's fill must find them against the frozen original and send their bytes).
  'source.tracker-misses-page',
  // `ferry run --net` (source-agent/task-network-setup.ts): the namespace and veth are made, the task not
  // started; the task runs, its namespace's temporary name deleted, the address not announced yet.
  'run.net-made',
  'run.task-started',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export type FaultAction = 'throw' | 'kill' | 'stop';
const ACTIONS: readonly string[] = ['throw', 'kill', 'stop'] satisfies FaultAction[];

let warned = false;

/** The armed points and their actions; empty unless FERRY_TEST_FAULTS=1. */
function armed(): Map<string, FaultAction> {
  const spec = (process.env.FERRY_FAULT ?? '').trim();
  const points = new Map<string, FaultAction>();
  if (spec === '') return points;
  if (process.env.FERRY_TEST_FAULTS !== '1') {
    if (!warned) process.stderr.write('ferry: FERRY_FAULT is ignored: fault injection needs FERRY_TEST_FAULTS=1 (a test switch)\n');
    warned = true;
    return points;
  }
  for (const item of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [point = '', action = 'throw'] = item.split(':');
    if (!(FAULT_POINTS as readonly string[]).includes(point) || !ACTIONS.includes(action)) {
      throw new FerryError('BAD_ARGUMENT', { message: `FERRY_FAULT names an unknown fault point or action: ${item}`, hint: `points: ${FAULT_POINTS.join(', ')}; actions: ${ACTIONS.join(', ')}` });
    }
    points.set(point, action as FaultAction);
  }
  return points;
}

export function faultArmed(point: FaultPoint): boolean {
  return armed().has(point);
}

/** Points that acted already: each acts the first time it is reached (a retried step passes it the next time). */
const fired = new Set<FaultPoint>();

/** Whether injectFault(point) would act now (armed, and not acted yet). */
export function faultPending(point: FaultPoint): boolean {
  return armed().has(point) && !fired.has(point);
}

/** Acts at `point` when FERRY_FAULT arms it: throws INTERNAL naming it, or kills or stops this process. */
export function injectFault(point: FaultPoint): void {
  const action = armed().get(point);
  if (action === undefined || fired.has(point)) return;
  fired.add(point);
  if (action === 'kill') process.kill(process.pid, 'SIGKILL');
  if (action === 'stop') {
    // One line the test can wait for, then the stop; the test resumes us with SIGCONT.
    process.stderr.write(`${JSON.stringify({ event: 'fault-point', point, action })}\n`);
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  throw new FerryError('INTERNAL', { message: `Injected fault at ${point}`, detail: 'FERRY_FAULT is set' });
}
