/**
 * The CRIU runner against the real CRIU: probe, dump with --leave-stopped, restore next to the stopped
 * original, and the failure paths (a dump CRIU refuses, a restore that fails, one that hangs, one aborted).
 * Needs root and a CRIU >= 4.2 (scripts/provision-criu.sh); skips with the reason otherwise.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeCriu, type CriuProbe } from '../../shared/criu/criu-binary.js';
import { criuDump, criuRestore } from '../../shared/criu/criu-runner.js';
import { checkPagesImageSize, decodePagemap } from '../../shared/criu/pagemap-image.js';
import { readImageOf } from '../../shared/criu/image-file.js';
import { FerryError, isFerryError } from '../../shared/errors/ferry-error.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';

const host = [isRoot(), hasCommand('unshare'), hasCommand('setsid')];
const probe: CriuProbe | undefined = host.every((r) => r.ok) ? await probeCriu() : undefined;
const criuReq: Requirement = { ok: probe?.ok === true, reason: probe && !probe.ok ? `needs a working CRIU >= 4.2: ${probe.reason}` : 'needs a working CRIU >= 4.2' };
const runnable = canRun('criu runner integration', ...host, criuReq);

/** Every pid this file starts or sees restored: killed at the end whatever happens. */
const spawned = new Set<number>();
const tmpDirs: string[] = [];

function tmpDir(): string {
  const d = mkdtempSync('/tmp/ferry-criu-it-');
  tmpDirs.push(d);
  return d;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

const aliveNotZombie = (pid: number): boolean => {
  const s = procState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
};

function nsPids(pid: number): number[] {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('NSpid:'));
  return (line ?? '').split(/\s+/).slice(1).filter(Boolean).map(Number);
}

/**
 * Starts `cmd` as pid 1 of a new pid namespace (`unshare --pid --fork [setsid] cmd`), stdio on /dev/null, and
 * returns the host pid of that pid 1.
 */
async function startTask(cmd: string[], opts: { setsid: boolean }): Promise<number> {
  const child = spawn('unshare', ['--pid', '--fork', ...(opts.setsid ? ['setsid'] : []), ...cmd], { stdio: 'ignore' });
  if (child.pid === undefined) throw new Error('unshare did not start');
  spawned.add(child.pid);
  child.unref();
  for (let i = 0; i < 100; i++) {
    const text = await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => '');
    const pid = Number(text.trim().split(' ')[0]);
    if (pid > 0) {
      spawned.add(pid);
      // setsid runs in place (pid 1 is no group leader), then execs cmd: wait for the exec.
      for (let j = 0; j < 100 && !readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(cmd[0]!); j++) await sleep(10);
      return pid;
    }
    await sleep(20);
  }
  throw new Error(`no pid-namespace init under unshare ${child.pid}`);
}

/** All descendants of `pid` now. */
async function descendantsOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  const queue = [pid];
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    const tids = await readdir(`/proc/${p}/task`).catch(() => [] as string[]);
    for (const tid of tids) {
      const text = await readFile(`/proc/${p}/task/${tid}/children`, 'utf8').catch(() => '');
      for (const c of text.trim().split(' ').filter(Boolean).map(Number)) {
        out.push(c);
        queue.push(c);
      }
    }
  }
  return out;
}

/** The pids of criu processes whose command line names `dir` (criu runs from a wrapper that execs it). */
async function findCriu(dir: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (/\0(dump|restore)\0/.test(cmdline) && cmdline.includes(`\0${dir}\0`) && aliveNotZombie(Number(name))) found.push(Number(name));
  }
  return found;
}

/** criu and its descendants, as seen now. */
async function criuTree(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const c of await findCriu(dir)) out.push(c, ...(await descendantsOf(c)));
  return out;
}

async function expectFerryError(p: Promise<unknown>): Promise<FerryError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FerryError) return e;
    throw e;
  }
  throw new Error('expected a FerryError, the call succeeded');
}

describe.skipIf(!runnable)('criu runner (real CRIU)', () => {
  let criu: string;
  /** A dump of a stopped `sleep` that every restore test starts from. */
  let baseDump: string;
  let original: number;

  beforeAll(async () => {
    if (!probe?.ok) throw new Error('unreachable: gated by canRun');
    criu = probe.path;
    original = await startTask(['sleep', '1000'], { setsid: true });
    baseDump = tmpDir();
    const t0 = performance.now();
    await criuDump({ criu, pid: original, imagesDir: baseDump, logFile: join(baseDump, 'dump.log') });
    console.info(`criu dump of a pid-namespace sleep: ${(performance.now() - t0).toFixed(0)} ms`);
  });

  afterAll(() => {
    for (const pid of spawned) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  });

  /** A copy of the base dump, to break on purpose. */
  function dumpCopy(): string {
    const d = tmpDir();
    cpSync(baseDump, d, { recursive: true });
    rmSync(join(d, 'dump.log'));
    return d;
  }

  it('probe finds CRIU >= 4.2 and `criu check` passes', () => {
    expect(probe).toMatchObject({ ok: true });
    if (!probe?.ok) return;
    expect(probe.path).toMatch(/^\//);
    const [major = 0, minor = 0] = probe.version.split('.').map(Number);
    expect(major * 100 + minor).toBeGreaterThanOrEqual(402);
  });

  it('dump --leave-stopped leaves the original stopped and writes consistent images', () => {
    expect(procState(original)).toBe('T');
    const pm = decodePagemap(readFileSync(join(baseDump, 'pagemap-1.img')));
    checkPagesImageSize(pm, statSync(join(baseDump, `pages-${pm.pagesId}.img`)).size);
    // One task, one pstree record; CRIU's own stats are written (Ferry decodes neither).
    expect(readImageOf(readFileSync(join(baseDump, 'pstree.img')), 'PSTREE')).toHaveLength(1);
    expect(readImageOf(readFileSync(join(baseDump, 'stats-dump')), 'STATS')).toHaveLength(1);
  });

  it('restores next to the stopped original; the restored copy runs after SIGCONT', async () => {
    const dir = dumpCopy();
    const pidFile = join(dir, 'restored.pid');
    const t0 = performance.now();
    const pid = await criuRestore({ criu, imagesDir: dir, pidFile, logFile: join(dir, 'restore.log'), leaveStopped: true, detach: true, timeoutMs: 30_000 });
    console.info(`criu restore: ${(performance.now() - t0).toFixed(0)} ms`);
    spawned.add(pid);
    expect(pid).not.toBe(original);
    expect(Number(readFileSync(pidFile, 'utf8'))).toBe(pid);
    expect(nsPids(pid).at(-1)).toBe(1); // pid 1 of its own, new pid namespace
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toBe('sleep\x001000\x00');
    expect(procState(pid)).toBe('T');
    expect(procState(original)).toBe('T');
    expect(readImageOf(readFileSync(join(dir, 'stats-restore')), 'STATS')).toHaveLength(1);

    process.kill(pid, 'SIGCONT');
    let state = procState(pid);
    for (let i = 0; i < 50 && state === 'T'; i++) {
      await sleep(20);
      state = procState(pid);
    }
    expect(['S', 'R']).toContain(state);
    process.kill(pid, 'SIGKILL');
  });

  it('a restore that fails quotes the errors of its log, without the RLIMIT_NOFILE line', async () => {
    const dir = dumpCopy();
    rmSync(join(dir, 'pages-1.img'));
    const logFile = join(dir, 'restore.log');
    const e = await expectFerryError(criuRestore({ criu, imagesDir: dir, pidFile: join(dir, 'r.pid'), logFile, timeoutMs: 30_000 }));
    expect(e.key).toBe('CRIU_RESTORE_FAILED');
    expect(e.phase).toBe('restore');
    expect(e.detail).toMatch(/criu restore exited with code 1:/);
    expect(e.detail).toMatch(/Error \(criu\/.*\): .*Restoring FAILED/);
    expect(e.detail).toContain(`log: ${logFile}`);
    expect(e.detail).not.toMatch(/RLIMIT_NOFILE/);
  });

  it('a truncated pages image makes restore spin: the timeout kills criu and everything it made', async () => {
    const dir = dumpCopy();
    const pages = join(dir, 'pages-1.img');
    truncateSync(pages, statSync(pages).size - 4096);
    const seen = new Set<number>();
    let watching = true;
    // Watch criu's process tree while it runs, to check afterwards that all of it is gone.
    const watcher = (async () => {
      while (watching) {
        for (const p of await criuTree(dir)) seen.add(p);
        await sleep(100);
      }
    })();
    const t0 = performance.now();
    const e = await expectFerryError(criuRestore({ criu, imagesDir: dir, pidFile: join(dir, 'r.pid'), logFile: join(dir, 'restore.log'), timeoutMs: 3000 }));
    const took = performance.now() - t0;
    watching = false;
    await watcher;
    for (const p of seen) spawned.add(p);
    expect(e.key).toBe('CRIU_RESTORE_TIMEOUT');
    expect(e.detail).toMatch(/did not finish in 3000 ms/);
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(took).toBeLessThan(10_000);
    expect(seen.size).toBeGreaterThanOrEqual(2); // criu and the restored task at least
    expect([...seen].filter(aliveNotZombie)).toEqual([]);
    expect(existsSync(join(dir, 'r.pid'))).toBe(false);
  });

  it('an aborted restore kills criu and everything it made, and says CANCELLED', async () => {
    const dir = dumpCopy();
    const pages = join(dir, 'pages-1.img');
    truncateSync(pages, statSync(pages).size - 4096);
    const ac = new AbortController();
    const seen = new Set<number>();
    setTimeout(() => {
      void (async () => {
        for (const p of await criuTree(dir)) seen.add(p);
        ac.abort();
      })();
    }, 1000);
    const e = await expectFerryError(criuRestore({ criu, imagesDir: dir, pidFile: join(dir, 'r.pid'), logFile: join(dir, 'restore.log'), timeoutMs: 30_000, signal: ac.signal }));
    for (const p of seen) spawned.add(p);
    expect(e.key).toBe('CANCELLED');
    expect(seen.size).toBeGreaterThanOrEqual(2);
    expect([...seen].filter(aliveNotZombie)).toEqual([]);
  });

  it('a dump CRIU refuses (session leader outside the pid namespace) is CRIU_DUMP_FAILED with the quoted line', async () => {
    const task = await startTask(['sleep', '100'], { setsid: false });
    const dir = tmpDir();
    const logFile = join(dir, 'dump.log');
    const e = await expectFerryError(criuDump({ criu, pid: task, imagesDir: dir, logFile }));
    expect(isFerryError(e, 'CRIU_DUMP_FAILED')).toBe(true);
    expect(e.phase).toBe('freeze');
    expect(e.side).toBe('source');
    expect(e.detail).toMatch(new RegExp(`Error \\(criu/cr-dump\\.c:\\d+\\): A session leader of ${task}\\(1\\) is outside of its pid namespace`));
    expect(e.detail).toMatch(/Dumping FAILED/);
    expect(e.detail).toContain(`log: ${logFile}`);
    expect(e.detail).not.toMatch(/RLIMIT_NOFILE/);
    // CRIU resumes the tree when a dump fails.
    expect(procState(task)).toMatch(/[SR]/);
    expect(readdirSync(dir).filter((n) => n.startsWith('pages-'))).toEqual([]);
  });

  it('a dump that overruns its timeout is CRIU_DUMP_FAILED; criu is gone and the task resumes with SIGCONT', async () => {
    const task = await startTask(['sleep', '1000'], { setsid: true });
    const dir = tmpDir();
    // A whole dump of this task takes about 65 ms here: 5 ms stops criu early in it.
    const e = await expectFerryError(criuDump({ criu, pid: task, imagesDir: dir, logFile: join(dir, 'dump.log'), timeoutMs: 5 }));
    expect(e.key).toBe('CRIU_DUMP_FAILED');
    expect(e.detail).toMatch(/criu dump did not finish in 5 ms and was killed/);
    expect(await criuTree(dir)).toEqual([]);
    process.kill(task, 'SIGCONT');
    await sleep(50);
    expect(procState(task)).toMatch(/[SR]/);
  });
});
