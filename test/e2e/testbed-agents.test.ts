/**
 * The harness's agents and process probes: a dest agent killed and restarted comes back on the same port with
 * the same work dir; a source-agent daemon runs in its host, answers on its socket, survives a restart and
 * leaves nothing after stop(); a process can be stopped and continued with /proc confirming each; and one task
 * goes back and forth through the daemons of both hosts (the soak's step), verified each way, with exactly one
 * copy, in the right host, after each.
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDestAgent, type DestAgentHandle } from '../../testbed/dest-agent.js';
import { runMigrateVia } from '../../testbed/ferry-migrate.js';
import { describeResult, runFerry, type FerryLine } from '../../testbed/ferry-process.js';
import { nsInode, pidsWithArgUnder, pidsWithArgs } from '../../testbed/leftovers.js';
import { httpGetIn, metricValue } from '../../testbed/metrics-scrape.js';
import { createTwoHosts, type Host, type TwoHosts } from '../../testbed/netns-hosts.js';
import { continueProcess, processResources, readPidState, stopProcess } from '../../testbed/process-probes.js';
import { canRun, hasCommand, hasCriu, isRoot, requireBuilt } from '../../testbed/requirements.js';
import { startSourceAgentDaemon, type SourceAgentDaemonHandle } from '../../testbed/source-agent-daemon.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { taskCopies } from '../../testbed/task-copies.js';
import { migrateVerified } from '../../testbed/verified-migration.js';
import { startMemtest, type MemtestHandle } from '../../testbed/workloads/memtest.js';

const runnable = canRun('testbed agents', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
const withCriu = runnable && canRun('testbed round trip', hasCommand('gcc'), hasCommand('unshare'), hasCriu());

/** A pid that no process can have (above pid_max's ceiling): the daemon refuses it before touching anything. */
const NO_SUCH_PID = 4194303;

let hosts: TwoHosts | undefined;
const agents: { stop(): Promise<void> }[] = [];
const dirs: string[] = [];

async function track<T extends { stop(): Promise<void> }>(agent: Promise<T>): Promise<T> {
  const a = await agent;
  agents.push(a);
  return a;
}

/** `ferry check --to DEST --json` from `from`: whether the dest agent there answered, with no problem. */
async function destAnswers(from: Host, dest: DestAgentHandle): Promise<boolean> {
  const r = await runFerry(['check', '--to', dest.address, '--json'], { host: from, timeoutMs: 30_000 });
  const report = r.lines.find((l): l is Extract<FerryLine, { kind: 'other' }> => l.kind === 'other')?.value;
  return report?.dest !== undefined && !report.destProblem;
}

/** The daemon answers when it refuses a pid that cannot exist, with the agent's own code (exit 2). */
async function expectDaemonAnswers(daemon: SourceAgentDaemonHandle, dest: DestAgentHandle): Promise<void> {
  const r = await runMigrateVia(hosts!, daemon, NO_SUCH_PID, dest, { timeoutMs: 30_000 });
  expect(r.exitCode, describeResult(r)).toBe(2);
  expect(r.error?.code).toBe('FERRY-1001');
}

/** /proc/PID/environ as an object. */
function environOf(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
}

beforeAll(async () => {
  if (!runnable) return;
  requireBuilt();
  hosts = await createTwoHosts();
});

afterAll(async () => {
  for (const a of agents.reverse()) await a.stop();
  await hosts?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe.skipIf(!runnable)('testbed: a dest agent killed and restarted', () => {
  it('comes back as a new process on the same port and work dir, answering; stop() removes the dir it made', async () => {
    const dest = await track(startDestAgent(hosts!, { metrics: true }));
    const { pid, port, workDir, metricsPort } = dest;
    expect(await destAnswers(hosts!.src, dest)).toBe(true);
    await dest.kill();
    expect(dest.exited()).toBe(true);
    expect(readPidState(pid)).toBeUndefined();
    expect(existsSync(workDir)).toBe(true);

    await dest.restart();
    expect(dest.pid).not.toBe(pid);
    expect([dest.port, dest.workDir, dest.metricsPort, dest.restarts]).toEqual([port, workDir, metricsPort, 1]);
    expect(await destAnswers(hosts!.src, dest)).toBe(true);
    const text = await httpGetIn(hosts!.dst, `http://${hosts!.dst.address}:${dest.metricsPort}/metrics`);
    expect(metricValue(text, 'ferry_dest_sessions_total{result="committed"}') ?? 0).toBe(0);

    // restart() of a running agent is a crash and a restart.
    const second = dest.pid;
    await dest.restart();
    expect(readPidState(second)).toBeUndefined();
    expect(dest.restarts).toBe(2);
    expect(dest.stderrAll().length).toBeGreaterThan(dest.stderr().length);

    await dest.stop();
    expect(readPidState(dest.pid)).toBeUndefined();
    expect(existsSync(workDir)).toBe(false);
    await expect(dest.restart()).rejects.toThrow(/stopped/);
  }, 90_000);

  it('listens on a given port, in either host, and keeps a given work dir', async () => {
    const workDir = makeTempDir('ferry-e2e-given-');
    dirs.push(workDir);
    // The namespace is ours alone: any port is free in it.
    const port = 20_000 + (process.pid % 20_000);
    const dest = await track(startDestAgent(hosts!, { host: hosts!.src, port, workDir }));
    expect(dest.address).toBe(`${hosts!.src.address}:${port}`);
    expect(nsInode(`/proc/${dest.pid}/ns/net`)).toBe(nsInode(hosts!.src.netns));
    // It accepts the other host (the dst), as a source of the way back.
    expect(await destAnswers(hosts!.dst, dest)).toBe(true);
    await dest.restart();
    expect(dest.port).toBe(port);
    await dest.stop();
    expect(existsSync(workDir)).toBe(true);
  }, 60_000);
});

describe.skipIf(!runnable)('testbed: a source-agent daemon', () => {
  let dest: DestAgentHandle;

  beforeAll(async () => {
    dest = await track(startDestAgent(hosts!));
  });

  it('runs in its host, answers on its socket, survives kill -9 and restart, and stop() leaves nothing', async () => {
    const daemon = await track(startSourceAgentDaemon(hosts!, { allowDests: [dest.address], metrics: true }));
    const { socket, stateDir, imagesDir, pid } = daemon;
    expect(statSync(socket).isSocket()).toBe(true);
    expect(nsInode(`/proc/${pid}/ns/net`)).toBe(nsInode(hosts!.src.netns));
    await expectDaemonAnswers(daemon, dest);
    const text = await httpGetIn(hosts!.src, `http://127.0.0.1:${daemon.metricsPort}/metrics`);
    expect(metricValue(text, 'process_open_fds')).toBeGreaterThan(0);

    await daemon.kill();
    expect(readPidState(pid)).toBeUndefined();
    await daemon.restart();
    expect([daemon.socket, daemon.stateDir, daemon.imagesDir, daemon.restarts]).toEqual([socket, stateDir, imagesDir, 1]);
    await expectDaemonAnswers(daemon, dest);

    const last = daemon.pid;
    await daemon.stop();
    expect(readPidState(last)).toBeUndefined();
    for (const p of [socket, dirname(socket), stateDir, imagesDir]) expect(existsSync(p), p).toBe(false);
    expect(pidsWithArgs(process.execPath.split('/').at(-1)!, '--socket', socket)).toEqual([]);
  }, 90_000);

  it('restart({ env }) replaces the added environment for that start and later ones; the dirs stay', async () => {
    const daemon = await track(startSourceAgentDaemon(hosts!, { allowDests: [dest.address], env: { FERRY_TEST_MARK: 'first' } }));
    expect(environOf(daemon.pid)).toMatchObject({ FERRY_TEST_MARK: 'first', FERRY_STATE_DIR: daemon.stateDir, FERRY_IMAGES_DIR: daemon.imagesDir });
    await daemon.restart({ env: { FERRY_TEST_MARK: 'second' } });
    expect(environOf(daemon.pid)).toMatchObject({ FERRY_TEST_MARK: 'second', FERRY_STATE_DIR: daemon.stateDir, FERRY_IMAGES_DIR: daemon.imagesDir });
    await daemon.restart();
    expect(environOf(daemon.pid).FERRY_TEST_MARK).toBe('second');
    await daemon.stop();
  }, 60_000);

  it('keeps given dirs: a restarted daemon finds its state dir as it was', async () => {
    const stateDir = makeTempDir('ferry-e2e-given-state-');
    const imagesDir = makeTempDir('ferry-e2e-given-images-');
    dirs.push(stateDir, imagesDir);
    writeFileSync(join(stateDir, 'kept'), 'x');
    const daemon = await track(startSourceAgentDaemon(hosts!, { allowDests: [dest.address], stateDir, imagesDir }));
    await daemon.restart();
    expect(existsSync(join(stateDir, 'kept'))).toBe(true);
    await daemon.stop();
    expect([existsSync(stateDir), existsSync(imagesDir), existsSync(daemon.socket)]).toEqual([true, true, false]);
  }, 60_000);

  it('stopProcess / continueProcess: /proc shows T, then not T, and the daemon answers again', async () => {
    const daemon = await track(startSourceAgentDaemon(hosts!, { allowDests: [dest.address] }));
    const before = processResources(daemon.pid);
    expect(before.rssBytes).toBeGreaterThan(10 << 20);
    expect(before.fds).toBeGreaterThan(3);
    expect(before.threads).toBeGreaterThan(1);
    await stopProcess(daemon.pid);
    expect(readPidState(daemon.pid)).toBe('T');
    await continueProcess(daemon.pid);
    expect(readPidState(daemon.pid)).not.toBe('T');
    await expectDaemonAnswers(daemon, dest);
    // stop() of a stopped daemon: it is continued to act on its SIGTERM, not left for the SIGKILL 10 s later.
    await stopProcess(daemon.pid);
    const t0 = Date.now();
    await daemon.stop();
    expect(Date.now() - t0).toBeLessThan(5_000);
    await expect(stopProcess(daemon.pid, 1_000)).rejects.toThrow(/ESRCH/);
  }, 60_000);
});

describe.skipIf(!withCriu)('testbed: a task back and forth through the daemons of both hosts', () => {
  let task: MemtestHandle | undefined;
  let stateDir: string | undefined;

  afterEach(async () => {
    await task?.stop();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('src -> dst -> src, the copy verified each way, nothing left on either host', async () => {
    const h = hosts!;
    const destOn = { src: await track(startDestAgent(h, { host: h.src })), dst: await track(startDestAgent(h, { host: h.dst })) };
    const daemonOn = {
      src: await track(startSourceAgentDaemon(h, { host: h.src, allowDests: [destOn.dst.address] })),
      dst: await track(startSourceAgentDaemon(h, { host: h.dst, allowDests: [destOn.src.address] })),
    };
    stateDir = makeTempDir('ferry-e2e-rt-');
    task = await startMemtest({ name: `e2e-rt-${process.pid}`, mib: 16, dirtyMibPerSec: 2, stateDir, netns: h.src.netns });
    expect(taskCopies(h, task.name)).toEqual([{ pid: task.rootPid, state: expect.stringMatching(/^[RSD]$/), host: 'src' }]);
    const there = await migrateVerified({ hosts: h, task, pid: task.rootPid, via: daemonOn.src, dest: destOn.dst });
    expect(taskCopies(h, task.name)).toEqual([{ pid: there.restoredPid, state: expect.stringMatching(/^[RSD]$/), host: 'dst' }]);
    const back = await migrateVerified({ hosts: h, task, pid: there.restoredPid, via: daemonOn.dst, dest: destOn.src });
    expect(taskCopies(h, task.name)).toEqual([{ pid: back.restoredPid, state: expect.stringMatching(/^[RSD]$/), host: 'src' }]);
    expect(back.verify.bad_pages).toBe(0);
    // No CRIU outlives its migration in any agent's dirs.
    for (const dir of [destOn.src.workDir, destOn.dst.workDir, daemonOn.src.imagesDir, daemonOn.dst.imagesDir]) expect(pidsWithArgUnder('criu', dir)).toEqual([]);
    for (const a of [destOn.src, destOn.dst, daemonOn.src, daemonOn.dst]) expect(a.exited()).toBe(false);
  }, 180_000);
});
