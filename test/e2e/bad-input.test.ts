/**
 * End to end: what `ferry migrate` (and `ferry dest-agent`) refuse, with which code and exit code, and that a
 * refusal touches nothing: the target keeps running (never stopped), the dest opens no session.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  errorCodeIn,
  eventually,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runFerry,
  runMigrate,
  startDestAgent,
  type DestAgentHandle,
  type FerryResult,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const runnable =
  canRun('e2e refusals', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('tc'), hasCommand('gcc'), hasCommand('unshare'), hasCommand('setsid')) &&
  canRun('e2e refusals (CRIU)', hasCriu());

const execFileAsync = promisify(execFile);
const NAME = `e2e-bad-${process.pid}`;

function expectRefused(r: FerryResult, code: string, exitCode = 2): void {
  expect(r.exitCode, describeResult(r)).toBe(exitCode);
  expect(r.timedOut).toBe(false);
  expect(r.error?.code, describeResult(r)).toBe(code);
  expect(r.summary).toBeUndefined();
  expect(r.lines.at(-1)?.kind).toBe('error');
  // Nothing of the migration proper began.
  expect(r.lines.some((l) => l.kind === 'phase')).toBe(false);
}

/** Alive and not stopped: a refusal never freezes anything. */
function expectUntouched(pid: number): void {
  expect(readPidState(pid), `pid ${pid}`).toMatch(/^[RSDI]$/);
}

interface Sleeper {
  /** The process that runs `sleep`: the launcher itself, or its first child. */
  pid: number;
  child: ChildProcess;
}

function comm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function firstChild(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

/** Spawns argv; resolves once `sleep` runs (exec done) in the launcher or, with viaChild, in its first child. */
async function startSleeper(argv: string[], opts: { detached: boolean; viaChild: boolean }): Promise<Sleeper> {
  const child = spawn(argv[0]!, argv.slice(1), { detached: opts.detached, stdio: 'ignore' });
  child.unref();
  const launcher = child.pid!;
  let pid = 0;
  await eventually(
    () => {
      const p = opts.viaChild ? firstChild(launcher) : launcher;
      if (p !== undefined && comm(p) === 'sleep') pid = p;
      return pid !== 0;
    },
    5_000,
    `sleep under ${argv.join(' ')}`,
  );
  return { pid, child };
}

async function stopSleeper(s: Sleeper | undefined): Promise<void> {
  if (!s) return;
  for (const pid of [s.pid, s.child.pid!]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await eventually(() => s.child.exitCode !== null || s.child.signalCode !== null, 5_000, `pid ${s.child.pid} to exit`);
}

describe.skipIf(!runnable)('refusals: bad input changes nothing', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let noCriuDest: DestAgentHandle | undefined;
  let v2Dest: DestAgentHandle | undefined;
  let strictDest: DestAgentHandle | undefined;
  let task: MemtestHandle | undefined;
  let stateDir: string | undefined;
  let imagesRoot: string | undefined;
  const env = (): Record<string, string> => ({ FERRY_IMAGES_DIR: imagesRoot! });

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-state-');
    imagesRoot = makeTempDir('ferry-e2e-images-');
    hosts = await createTwoHosts();
    [dest, noCriuDest, v2Dest, strictDest, task] = await Promise.all([
      startDestAgent(hosts),
      startDestAgent(hosts, { env: { FERRY_CRIU: '/nonexistent/criu' } }),
      startDestAgent(hosts, { env: { FERRY_TEST_PROTOCOL_VERSIONS: '2' } }),
      startDestAgent(hosts, { allowPeers: ['spiffe://e2e.ferry.test/ferry/somebody-else'] }),
      startMemtest({ name: NAME, mib: 4, dirtyMibPerSec: 1, stateDir, netns: hosts.src.netns }),
    ]);
  }, 60_000);

  afterAll(async () => {
    await task?.stop();
    for (const d of [dest, noCriuDest, v2Dest, strictDest]) await d?.stop();
    await hosts?.destroy();
    for (const d of [stateDir, imagesRoot]) if (d) rmSync(d, { recursive: true, force: true });
  });

  describe('the target', () => {
    it('an unknown pid: FERRY-1001', async () => {
      let pid = 4_194_000;
      while (existsSync(`/proc/${pid}`)) pid--;
      expectRefused(await runMigrate(hosts!, pid, dest, { env: env() }), 'FERRY-1001');
      expect(dest!.leftovers()).toEqual([]);
    });

    it('a kernel thread (pid 2, kthreadd): FERRY-1002', async () => {
      expect(comm(2)).toBe('kthreadd');
      expectRefused(await runMigrate(hosts!, 2, dest, { env: env() }), 'FERRY-1002');
      expectUntouched(2);
      expect(dest!.leftovers()).toEqual([]);
    });

    it('the host init (pid 1): FERRY-1003', async () => {
      expectRefused(await runMigrate(hosts!, 1, dest, { env: env() }), 'FERRY-1003');
      expectUntouched(1);
      expect(dest!.leftovers()).toEqual([]);
    });

    it('a task whose session leader is outside its tree: FERRY-1004, and it keeps running', async () => {
      // No setsid: the sleep stays in the session of unshare (its parent, made a session leader by detached).
      const s = await startSleeper(['nsenter', `--net=${hosts!.src.netns}`, 'unshare', '--pid', '--fork', 'sleep', '1000'], {
        detached: true,
        viaChild: true,
      });
      try {
        expect(sessionOf(s.pid)).not.toBe(s.pid);
        expectRefused(await runMigrate(hosts!, s.pid, dest, { env: env() }), 'FERRY-1004');
        expectUntouched(s.pid);
        expect(dest!.leftovers()).toEqual([]);
      } finally {
        await stopSleeper(s);
      }
    });

    it('a task that is not a pid-namespace root, whose pid is taken on the dest (same kernel): FERRY-1005', async () => {
      // Not detached: the child is no group leader, so setsid makes it a session leader without forking.
      const s = await startSleeper(['nsenter', `--net=${hosts!.src.netns}`, 'setsid', 'sleep', '1000'], { detached: false, viaChild: false });
      try {
        expect(sessionOf(s.pid)).toBe(s.pid);
        const r = await runMigrate(hosts!, s.pid, dest, { env: env() });
        expect(r.exitCode, describeResult(r)).toBe(2);
        expect(r.error).toMatchObject({ code: 'FERRY-1005', phase: 'prepare', sourceState: 'running' });
        expectUntouched(s.pid);
        expect(dest!.leftovers()).toEqual([]);
      } finally {
        await stopSleeper(s);
      }
    });
  });

  describe('the dest', () => {
    it('unreachable (nothing listens there): FERRY-1006, exit 1 (retryable)', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, undefined, { to: `${hosts!.dst.address}:1`, env: env() });
      expectRefused(r, 'FERRY-1006', 1);
      expect(r.error).toMatchObject({ retryable: true, sourceState: 'running' });
      expectUntouched(task!.rootPid);
    });

    it('without CRIU (FERRY_CRIU=/nonexistent/criu): FERRY-1007', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, noCriuDest, { env: env() });
      expectRefused(r, 'FERRY-1007');
      expect(r.error).toMatchObject({ side: 'dest', sourceState: 'running' });
      expectUntouched(task!.rootPid);
      expect(noCriuDest!.leftovers()).toEqual([]);
    });

    it('speaking another protocol version (FERRY_TEST_PROTOCOL_VERSIONS=2): FERRY-1008', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, v2Dest, { env: env() });
      expectRefused(r, 'FERRY-1008');
      expect(r.error).toMatchObject({ sourceState: 'running' });
      expectUntouched(task!.rootPid);
      expect(v2Dest!.leftovers()).toEqual([]);
    });
  });

  describe('mutual TLS', () => {
    it('a dest whose allow-list lacks this source: FERRY-1104 from the dest, nothing opened there', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, strictDest, { env: env() });
      expectRefused(r, 'FERRY-1104');
      expect(r.error).toMatchObject({ side: 'dest' });
      expect(strictDest!.stderr()).toContain('"code":"FERRY-1104"');
      expectUntouched(task!.rootPid);
      expect(strictDest!.leftovers()).toEqual([]);
    });

    it("a dest whose identity is not on this source's allow-list: FERRY-1104 from the source", async () => {
      const r = await runMigrate(hosts!, task!.rootPid, dest, { env: env(), args: ['--allow-peer', 'spiffe://e2e.ferry.test/ferry/another-dest'] });
      expectRefused(r, 'FERRY-1104');
      expect(r.error).toMatchObject({ side: 'source' });
      expectUntouched(task!.rootPid);
    });

    it('a plaintext source against a TLS dest: FERRY-1108', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, dest, { env: env(), args: ['--insecure'] });
      expectRefused(r, 'FERRY-1108');
      expectUntouched(task!.rootPid);
    });

    it('without its certificate files: FERRY-1101, before anything', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, dest, { env: { ...env(), FERRY_TLS_DIR: '/nonexistent/tls' } });
      expectRefused(r, 'FERRY-1101');
      expectUntouched(task!.rootPid);
    });
  });

  describe('usage', () => {
    it('migrate abc --to x: FERRY-0001', async () => {
      const r = await runFerry(['migrate', 'abc', '--to', 'x', '--json'], { host: hosts!.src, env: env() });
      expectRefused(r, 'FERRY-0001');
    });

    it('migrate PID --to x (no port): FERRY-0002', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, undefined, { to: 'x', env: env() });
      expectRefused(r, 'FERRY-0002');
      expectUntouched(task!.rootPid);
    });

    it('migrate PID --page-channels 17: FERRY-0001, the task untouched (issue 15)', async () => {
      const r = await runMigrate(hosts!, task!.rootPid, dest, { args: ['--page-channels', '17'], env: env() });
      expectRefused(r, 'FERRY-0001');
      expectUntouched(task!.rootPid);
    });

    it('migrate PID without --to: FERRY-0001', async () => {
      const r = await runFerry(['migrate', String(task!.rootPid), '--json'], { host: hosts!.src, env: env() });
      expectRefused(r, 'FERRY-0001');
      expectUntouched(task!.rootPid);
    });

    it('post-copy against itself: --post-copy off --on-no-converge postcopy, --post-copy auto --restore eager: FERRY-0001 (issue 12)', async () => {
      for (const args of [['--post-copy', 'off', '--on-no-converge', 'postcopy'], ['--post-copy', 'auto', '--restore', 'eager'], ['--post-copy', 'always', '--no-precopy']]) {
        const r = await runMigrate(hosts!, task!.rootPid, dest, { args, env: env() });
        expectRefused(r, 'FERRY-0001');
      }
      expectUntouched(task!.rootPid);
      expect(dest!.leftovers()).toEqual([]);
    });

    it('dest-agent in plaintext (--insecure) on a non-loopback address without --insecure-any-address: FERRY-0003', async () => {
      const workDir = makeTempDir('ferry-e2e-dest-');
      try {
        // In the dst host, so that even a wrongly started agent could listen nowhere else; bounded if it does.
        const r = await runFerry(['dest-agent', '--listen', `${hosts!.dst.address}:0`, '--insecure', '--work-dir', workDir], { host: hosts!.dst, timeoutMs: 15_000 });
        expect(r.timedOut, describeResult(r)).toBe(false);
        expect(r.exitCode, describeResult(r)).toBe(2);
        expect(errorCodeIn(r.stderr), r.stderr).toBe('FERRY-0003');
        expect(r.stdout).not.toContain('listening');
      } finally {
        rmSync(workDir, { recursive: true, force: true });
      }
    });
  });

  it('the src link can be shaped (tbf), inside the src host only', async () => {
    await hosts!.shape('1gbit');
    const { stdout } = await execFileAsync('nsenter', [`--net=${hosts!.src.netns}`, 'tc', 'qdisc', 'show', 'dev', hosts!.src.link]);
    expect(stdout).toMatch(/qdisc tbf .*rate 1Gbit/);
  });

  it('after all refusals the workload is intact and no dest holds a session', async () => {
    expectUntouched(task!.rootPid);
    expect((await task!.verify()).bad_pages).toBe(0);
    for (const d of [dest!, noCriuDest!, v2Dest!, strictDest!]) {
      expect(d.exited()).toBe(false);
      expect(d.leftovers()).toEqual([]);
    }
  });
});
