/**
 * End to end, the migratability preflight (issue 13, item 4) between two network-namespace hosts: real tasks
 * refused for real reasons by `ferry check PID --to` and by `ferry migrate`, each with its code, while the
 * task runs on untouched (its beat counter advances, it is neither stopped nor traced): a task holding an
 * io_uring instance; a task listening on the src host's own address, which the dest lacks; a task moving to
 * a dest agent whose CPU seems to lack a flag of the source's (FERRY_TEST_HIDE_CPU_FLAGS), which
 * `--allow cpu-features` then moves.
 */
import { readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCpuFlags } from '../../shared/kernel/cpu-flags.js';
import { startFerry, type FerryResult } from '../../testbed/ferry-process.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { createTwoHosts, describeResult, hasCriu, makeTempDir, requireBuilt, runMigrate, startDestAgent, type DestAgentHandle, type TwoHosts } from '../../testbed/two-hosts.js';
import { startPreflightTask, type PreflightTaskHandle, type PreflightTaskMode } from '../../testbed/workloads/preflight-tasks.js';

const runnable = canRun('e2e preflight', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCommand('python3')) && canRun('e2e preflight (CRIU)', hasCriu());

interface CheckJson {
  ok: boolean;
  preflight: { check: string; verdict: string; code: string; message: string; hint: string }[];
}

/** A flag of this CPU for the dest to seem to lack: one a task may really use, else the first there is. */
function flagToHide(): string {
  const flags = parseCpuFlags(readFileSync('/proc/cpuinfo', 'utf8'));
  return ['avx512f', 'avx2', 'sse4_2', 'asimd'].find((f) => flags.includes(f)) ?? flags[0] ?? 'none';
}

describe.skipIf(!runnable)('the preflight between two network-namespace hosts', () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let dir: string | undefined;
  const stops: (() => void)[] = [];

  beforeAll(async () => {
    requireBuilt();
    dir = makeTempDir('ferry-e2e-preflight-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    for (const stop of stops) stop();
    await dest?.stop();
    await hosts?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function task(mode: PreflightTaskMode, arg?: string): Promise<PreflightTaskHandle> {
    const t = await startPreflightTask(mode, hosts!.src.netns, dir!, `preflight-${mode}-${process.pid}`, arg);
    stops.push(() => t.stop());
    return t;
  }

  async function check(pid: number, to: DestAgentHandle, args: string[] = []): Promise<{ r: FerryResult; json: CheckJson }> {
    const r = await startFerry(['check', String(pid), '--to', to.address, '--json', ...args], { host: hosts!.src, timeoutMs: 60_000 }).done;
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"ok"'));
    expect(line, describeResult(r)).toBeDefined();
    return { r, json: JSON.parse(line!) as CheckJson };
  }

  /** Not stopped, not traced, and still beating: nothing was done to it. */
  async function expectUntouched(t: PreflightTaskHandle): Promise<void> {
    const status = readFileSync(`/proc/${t.pid}/status`, 'utf8');
    expect(status).not.toMatch(/^State:\s+[tT]/m);
    expect(status).toMatch(/^TracerPid:\s+0$/m);
    const before = t.beats();
    await sleep(300);
    expect(t.beats()).toBeGreaterThan(before);
  }

  /** `ferry check` and `ferry migrate` both refuse with `code`; returns the check's finding. */
  async function expectRefused(t: PreflightTaskHandle, to: DestAgentHandle, checkName: string, code: string): Promise<CheckJson['preflight'][number]> {
    const { r, json } = await check(t.pid, to);
    expect(r.exitCode, describeResult(r)).toBe(1);
    expect(json.ok).toBe(false);
    const f = json.preflight.find((x) => x.check === checkName)!;
    expect(f, JSON.stringify(json.preflight)).toMatchObject({ verdict: 'refuse', code });
    expect(f.hint).not.toBe('');
    const m = await runMigrate(hosts!, t.pid, to, { timeoutMs: 60_000 });
    // 2: refused before anything changed (cli/exit-codes.ts).
    expect(m.exitCode, describeResult(m)).toBe(2);
    expect(m.error?.code, describeResult(m)).toBe(code);
    expect(m.error?.phase, describeResult(m)).toBe('negotiate');
    expect(m.error?.sourceState, describeResult(m)).toBe('running');
    await expectUntouched(t);
    return f;
  }

  it('a task holding an io_uring instance: refused (FERRY-1207), the task runs on', async () => {
    const t = await task('io-uring');
    const f = await expectRefused(t, dest!, 'io-uring', 'FERRY-1207');
    expect(f.message).toMatch(/io_uring fd/);
  }, 120_000);

  it('a task listening on the src host\'s own address: refused (FERRY-1204), the dest lacks it', async () => {
    const t = await task('bound', hosts!.src.address);
    const f = await expectRefused(t, dest!, 'local-addresses', 'FERRY-1204');
    expect(f.message).toContain(hosts!.src.address);
  }, 120_000);

  it('a dest whose CPU lacks a flag of the source\'s: refused (FERRY-1213) with the flag named; --allow cpu-features moves the task', async () => {
    const hidden = flagToHide();
    const lacking = await startDestAgent(hosts!, { env: { FERRY_TEST_HIDE_CPU_FLAGS: hidden } });
    try {
      const t = await task('plain');
      const f = await expectRefused(t, lacking, 'cpu-features', 'FERRY-1213');
      expect(f.message.split(': ').at(-1)!.split(' ')).toContain(hidden);
      const allowed = await check(t.pid, lacking, ['--allow', 'cpu-features']);
      expect(allowed.r.exitCode, describeResult(allowed.r)).toBe(0);
      expect(allowed.json.preflight.find((x) => x.check === 'cpu-features')?.verdict).toBe('note');
      const m = await runMigrate(hosts!, t.pid, lacking, { args: ['--allow', 'cpu-features'], timeoutMs: 90_000 });
      expect(m.exitCode, describeResult(m)).toBe(0);
      const copy = m.summary!.restoredPid;
      stops.push(() => {
        try {
          process.kill(copy, 'SIGKILL');
        } catch {
          /* gone */
        }
      });
      const before = t.beats();
      await sleep(300);
      expect(t.beats(), 'the copy beats on the dest').toBeGreaterThan(before);
    } finally {
      await lacking.stop();
    }
  }, 180_000);
});
