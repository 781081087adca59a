/**
 * End to end with the uffd-wp tracker: a userfaultfd is injected into the running task by ptrace, pre-copy
 * rounds after round 0 read only the pages written since (asserted on the counters), and the restored copy
 * verifies its memory: the C workload, and a python3 process that checks its own data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UffdWpTracker } from '../../source-agent/trackers/uffd-wp/uffd-wp-tracker.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';
import {
  createTwoHosts,
  describeResult,
  eventually,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runMigrate,
  startDestAgent,
  type DestAgentHandle,
  type TwoHosts,
} from '../../testbed/two-hosts.js';
import { readPidState, startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const probe = await UffdWpTracker.probe();
const uffd: Requirement = { ok: probe.ok, reason: `needs uffd-wp on this kernel (${probe.ok ? '' : probe.reason})` };
const runnable =
  canRun('e2e uffd-wp', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('gcc'), hasCommand('unshare'), hasCommand('python3'), uffd) &&
  canRun('e2e uffd-wp (CRIU)', hasCriu());

/** 32 MiB of pages, each holding (index, version); 50 random pages rewritten every 10 ms; SIGUSR1: self-check. */
const PYTHON = `
import os, signal, struct, time, random, json, sys
N = 8192
ba = bytearray(N * 4096)
ver = [0] * N
def fill(i, v):
    ba[i * 4096:(i + 1) * 4096] = struct.pack('<II', i, v) * 512
for i in range(N):
    fill(i, 0)
want = [False]
def on_usr1(s, f):
    want[0] = True
signal.signal(signal.SIGUSR1, on_usr1)
out = sys.argv[1]
with open(out + '.ready', 'w') as f:
    f.write(str(os.getpid()))
while True:
    for _ in range(50):
        i = random.randrange(N)
        ver[i] += 1
        fill(i, ver[i])
    if want[0]:
        want[0] = False
        bad = sum(1 for i in range(N) if ba[i * 4096:(i + 1) * 4096] != struct.pack('<II', i, ver[i]) * 512)
        with open(out + '.tmp', 'w') as f:
            f.write(json.dumps({'bad': bad, 'writes': sum(ver)}))
        os.rename(out + '.tmp', out)
    time.sleep(0.01)
`;

describe.skipIf(!runnable)('migration with --tracker uffd-wp', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let stateDir: string | undefined;
  const tasks: MemtestHandle[] = [];
  const pythons: ChildProcess[] = [];
  const extraPids: number[] = [];

  beforeAll(async () => {
    requireBuilt();
    stateDir = makeTempDir('ferry-e2e-uffd-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    for (const t of tasks) await t.stop();
    for (const pid of extraPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const p of pythons) p.kill('SIGKILL');
    await dest?.stop();
    await hosts?.destroy();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('the memory-verifying workload: later rounds read only the written pages', async () => {
    const task = await startMemtest({ name: `uffd-${process.pid}`, mib: 64, dirtyMibPerSec: 4, stateDir: stateDir!, netns: hosts!.src.netns });
    tasks.push(task);
    const r = await runMigrate(hosts!, task.rootPid, dest, { args: ['--tracker', 'uffd-wp'], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const s = r.summary!;
    task.adopt(s.restoredPid);
    expect(s.tracker).toBe('uffd-wp');
    expect(s.rounds.length).toBeGreaterThanOrEqual(2);
    const [round0, ...later] = s.rounds;
    expect(round0!.bytesRead).toBeGreaterThanOrEqual(64 * 2 ** 20);
    for (const round of later) {
      // 4 MiB/s for a fraction of a second: a few hundred pages, never the whole 64 MiB again.
      expect(round.bytesRead, JSON.stringify(round)).toBeLessThan(round0!.bytesRead / 4);
      expect(round.bytesRead).toBeGreaterThanOrEqual(round.bytesSent);
    }
    console.log(`uffd-wp rounds (pages read / sent): ${s.rounds.map((x) => `${x.bytesRead / 4096}/${x.dirtyPages}`).join(', ')}`);
    expect((await task.verify(s.restoredPid)).bad_pages).toBe(0);
  }, 120_000);

  it('a python3 process keeps its data (it checks itself after the move)', async () => {
    const out = join(stateDir!, 'python.check.json');
    const launcher = spawn('nsenter', [`--net=${hosts!.src.netns}`, 'unshare', '--pid', '--fork', 'setsid', 'python3', '-c', PYTHON, out], {
      stdio: 'ignore',
      detached: true,
    });
    pythons.push(launcher);
    await eventually(() => existsSync(`${out}.ready`), 20_000, 'python to fill its memory');
    const children = readFileSync(`/proc/${launcher.pid}/task/${launcher.pid}/children`, 'utf8').trim().split(' ');
    // nsenter execs unshare, whose only child is python (pid 1 of its namespace).
    const pid = Number(children[0]);
    expect(readPidState(pid)).toMatch(/^[RSD]$/);
    const r = await runMigrate(hosts!, pid, dest, { args: ['--tracker', 'uffd-wp'], timeoutMs: 90_000 });
    expect(r.exitCode, describeResult(r)).toBe(0);
    const restored = r.summary!.restoredPid;
    extraPids.push(restored);
    expect(r.summary!.tracker).toBe('uffd-wp');
    rmSync(out, { force: true });
    const asked = Date.now();
    process.kill(restored, 'SIGUSR1');
    await eventually(() => existsSync(out) && statSync(out).mtimeMs >= asked - 1000, 20_000, 'the restored python to check itself');
    const check = JSON.parse(readFileSync(out, 'utf8')) as { bad: number; writes: number };
    expect(check.bad).toBe(0);
    expect(check.writes).toBeGreaterThan(0);
  }, 120_000);
});
