/**
 * End to end (issue 16, part B): a server in its own network namespace moves with its address, and its clients
 * keep their TCP connections. Three hosts on one L2 segment (testbed/l2-segment.ts): the server starts on A
 * with `ferry run --net` (its own veth on A's bridge); a client on C holds one connection and sends a numbered
 * line every 10 ms across `ferry migrate`; after the move the same connection (same local port, never a
 * reconnect) has every answer in order, none lost, none duplicated. Each move's longest client gap is printed
 * beside its downtime. Also: the listening TCP socket (a new connection after the move), UDP (an echo after
 * the move), a TCP connection inside the task (over its loopback, both ends in the tree: asked once around),
 * Redis with a client INCR-ing over one connection (final value == acknowledged INCRs), a migration back
 * B -> A (lazy restore) and on to B again (post-copy), and rollbacks after a failed restore and after a
 * successful one (the server answers on A again over the same connection).
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdTablesIn } from '../../shared/kernel/nft-hold.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { startFerry } from '../../testbed/ferry-process.js';
import { waitFor } from '../../testbed/wait-for.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import {
  createL2Segment,
  describeResult,
  hasCriu,
  makeTempDir,
  requireBuilt,
  runMigrate,
  startDestAgent,
  type DestAgentHandle,
  type FerryResult,
  type HostPair,
  type L2Segment,
} from '../../testbed/two-hosts.js';
import { ECHO_SERVER, loopbackInsideAnswers, startEchoClient, tcpEchoesOnNewConnection, udpEchoes, type EchoSummary } from '../../testbed/workloads/echo-server.js';
import { startNetTask, type NetTaskHandle } from '../../testbed/workloads/net-task.js';
import { waitListening } from '../../testbed/workloads/line-client.js';
import { redisGet, redisServerArgv, startIncrClient } from '../../testbed/workloads/redis-incr.js';

const runnable =
  canRun('e2e task network', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCommand('python3')) && canRun('e2e task network (CRIU)', hasCriu());
const hasRedis = canRun('e2e task network: Redis', hasCommand('redis-server'));

const PORT = 7300;

/** A server of the test: `ferry run --net` on A, and the copies its migrations made (killed at the end by pid). */
interface Server {
  pid: number;
  address: string;
  outerLink: string;
  handle: NetTaskHandle;
  copies: number[];
}

function linkExists(host: { name: string }, link: string): boolean {
  return spawnSync('ip', ['-n', host.name, 'link', 'show', 'dev', link], { timeout: 10_000 }).status === 0;
}

/** Whether no ferry-hold table is left in the task's namespace (an opened hold not deleted is no hold, yet stays). */
const noHoldLeft = (pid: number): boolean => holdTablesIn(`/proc/${pid}/ns/net`).length === 0;

function expectMigrated(r: FerryResult): void {
  expect(r.exitCode, describeResult(r)).toBe(0);
  expect(r.summary, describeResult(r)).toBeDefined();
}

function expectIntact(s: EchoSummary, localPort: number): void {
  expect(s).toMatchObject({ error: null, lost: 0, duplicated: 0, localPort });
  expect(s.answered).toBe(s.sent);
  expect(s.sent).toBeGreaterThan(50);
}

/** A migration with the wall-clock time it ran in: the client's gaps that ended then are its. */
interface Move {
  what: string;
  r: FerryResult;
  from: number;
  to: number;
}

async function move(what: string, run: () => Promise<FerryResult>): Promise<Move> {
  const from = Date.now();
  const r = await run();
  return { what, r, from, to: Date.now() };
}

/** Per move: the longest gap the client saw that ended during it or after it (before the next), next to its downtime. */
function report(workload: string, s: EchoSummary, moves: Move[]): void {
  for (const [i, m] of moves.entries()) {
    const until = moves[i + 1]?.from ?? Infinity;
    const gap = Math.max(0, ...s.longGaps.filter(([, end]) => end >= m.from && end < until).map(([ms]) => ms));
    const p = m.r.summary?.phases;
    const parts = p ? `: dump ${Math.round(p.dumpMs ?? 0)}, final delta ${Math.round(p.finalDeltaMs ?? 0)}, rebuild ${Math.round(p.rebuildMs ?? 0)}, restore ${Math.round(p.restoreMs ?? 0)}, commit ${Math.round(p.commitMs ?? 0)} ms` : '';
    const downtime = m.r.summary ? `downtime ${Math.round(m.r.summary.downtimeMs)} ms (${m.r.summary.restoreMode} restore${parts})` : `no downtime figure (failed: ${m.r.error?.code ?? `exit ${m.r.exitCode ?? m.r.signal}`}), the whole attempt took ${m.to - m.from} ms`;
    console.log(`${workload}, ${m.what}: longest client gap ${gap} ms, ${downtime}`);
  }
  console.log(`${workload}: ${s.sent} requests, ${s.lost} lost, ${s.duplicated} duplicated, one connection (local port ${s.localPort}), longest gap overall ${s.maxGapMs} ms`);
}

describe.skipIf(!runnable)('a task in its own network namespace moves with its address; its connections survive', () => {
  let seg: L2Segment | undefined;
  let toB: DestAgentHandle | undefined;
  let toA: DestAgentHandle | undefined;
  let back: HostPair | undefined;
  let dir: string | undefined;
  const servers: Server[] = [];

  beforeAll(async () => {
    requireBuilt();
    dir = makeTempDir('ferry-e2e-net-');
    seg = await createL2Segment();
    back = { src: seg.b, dst: seg.a, enter: (h) => seg!.enter(h), peerOf: (h) => seg!.peerOf(h) };
    [toB, toA] = await Promise.all([startDestAgent(seg), startDestAgent(back)]);
  }, 90_000);

  afterAll(async () => {
    for (const t of servers) {
      for (const pid of t.copies) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    await Promise.all(servers.map((t) => t.handle.stop().catch((e: unknown) => console.warn(`server ${t.pid} not stopped cleanly: ${String(e)}`))));
    await Promise.all([toB?.stop(), toA?.stop()]);
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function server(name: string, i: number, command: string[]): Promise<Server> {
    const address = seg!.taskAddress(i);
    const handle = await startNetTask(seg!.a, dir!, name, { net: `${address}/${seg!.prefix}`, runArgs: ['--bridge', seg!.bridge], command });
    const t = { pid: handle.pid, address, outerLink: handle.network.outerLink, handle, copies: [] };
    servers.push(t);
    await waitListening(seg!.c.netns, address, PORT);
    return t;
  }
  const echoTask = (i: number): Promise<Server> => server(`echo-${i}`, i, ['python3', '-c', ECHO_SERVER, String(PORT)]);

  it('the echo server: A -> B (eager restore), back B -> A (lazy restore), A -> B again (post-copy), one connection throughout; TCP listen, UDP and a connection inside the task answer each time', async () => {
    const task = await echoTask(0);
    const client = await startEchoClient(dir!, seg!.c.netns, task.address, PORT);
    expect(loopbackInsideAnswers(seg!.c.netns, task.address, PORT)).toBe(true);
    await sleep(500);

    const thereMove = await move('A -> B', () => runMigrate(seg!, task.pid, toB, { args: ['--restore', 'eager'], timeoutMs: 120_000 }));
    const there = thereMove.r;
    expectMigrated(there);
    const copy = there.summary!.restoredPid;
    task.copies.push(copy);
    // The original and its veth are gone from A; the copy's veth is on B's bridge.
    expect(linkExists(seg!.a, task.outerLink)).toBe(false);
    expect(linkExists(seg!.b, task.outerLink)).toBe(true);
    // The dest opened the hold before the resume, then announced the address and deleted the hold (after it).
    const announced = new RegExp(`the copy's network hold let go.*"announced":\\["${task.address.replace(/\./g, '\\.')}"\\]`);
    await waitFor(() => announced.test(toB!.stderrAll()), 10_000, "the dest's announcement");
    await waitFor(() => noHoldLeft(copy), 10_000, "the copy's hold tables deleted");
    await sleep(1_000);
    expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
    expect(tcpEchoesOnNewConnection(seg!.c.netns, task.address, PORT)).toBe(true);
    expect(loopbackInsideAnswers(seg!.c.netns, task.address, PORT)).toBe(true);

    const homeMove = await move('B -> A', () => runMigrate(back!, copy, toA, { args: ['--restore', 'lazy'], timeoutMs: 120_000 }));
    const home = homeMove.r;
    expectMigrated(home);
    task.copies.push(home.summary!.restoredPid);
    expect(linkExists(seg!.b, task.outerLink)).toBe(false);
    expect(linkExists(seg!.a, task.outerLink)).toBe(true);
    await sleep(1_000);
    expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
    expect(loopbackInsideAnswers(seg!.c.netns, task.address, PORT)).toBe(true);

    // Post-copy: the copy runs on B at once, fetching its pages from the frozen original on A.
    const againMove = await move('A -> B (post-copy)', () => runMigrate(seg!, home.summary!.restoredPid, toB, { args: ['--post-copy', 'always'], timeoutMs: 120_000 }));
    const again = againMove.r;
    expectMigrated(again);
    expect(again.summary!.postCopied).toBe(true);
    task.copies.push(again.summary!.restoredPid);
    expect(linkExists(seg!.a, task.outerLink)).toBe(false);
    await sleep(1_000);
    expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
    expect(loopbackInsideAnswers(seg!.c.netns, task.address, PORT)).toBe(true);

    const s = await client.finish();
    report('echo server', s, [thereMove, homeMove, againMove]);
    expectIntact(s, client.localPort);
  }, 300_000);

  it.skipIf(!hasRedis)('Redis: a client INCR-ing over one connection across the move; the final value equals the acknowledged INCRs', async () => {
    const task = await server('redis', 1, redisServerArgv(PORT));
    const client = await startIncrClient(dir!, seg!.c.netns, task.address, PORT);
    await sleep(500);
    const m = await move('A -> B', () => runMigrate(seg!, task.pid, toB, { args: ['--restore', 'eager'], timeoutMs: 120_000 }));
    const r = m.r;
    expectMigrated(r);
    task.copies.push(r.summary!.restoredPid);
    await sleep(1_000);
    const s = await client.finish();
    report('redis', s, [m]);
    expect(s).toMatchObject({ error: null, lost: 0, localPort: client.localPort });
    expect(s.answered).toBeGreaterThan(50);
    expect(redisGet(seg!.c.netns, task.address, PORT)).toBe(s.answered);
  }, 300_000);

  it('a failed restore rolls back: the server answers on A again over the same connection; nothing held, the veth kept', async () => {
    const task = await echoTask(2);
    const client = await startEchoClient(dir!, seg!.c.netns, task.address, PORT);
    await sleep(500);
    await toB!.restart({ env: { FERRY_FAULT: 'dest.restore-fails', FERRY_TEST_FAULTS: '1' } });
    let rolled: Move | undefined;
    try {
      rolled = await move('A -> B, rolled back', () => runMigrate(seg!, task.pid, toB, { timeoutMs: 120_000 }));
      const r = rolled.r;
      expect(r.exitCode, describeResult(r)).toBe(1);
      expect(r.error?.sourceState).toBe('running');
      expect(r.error?.rollbackErrors ?? []).toEqual([]);
    } finally {
      await toB!.restart({ env: {} });
    }
    await waitFor(() => noHoldLeft(task.pid), 10_000, "the original's hold tables deleted");
    expect(linkExists(seg!.a, task.outerLink)).toBe(true);
    expect(linkExists(seg!.b, task.outerLink)).toBe(false);
    await sleep(1_500);
    expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
    const s = await client.finish();
    report('echo server', s, rolled ? [rolled] : []);
    expectIntact(s, client.localPort);
  }, 300_000);

  it('a rollback after a successful restore: the dest kills its held copy and removes its veth; the server answers on A again over the same connection', async () => {
    const task = await echoTask(4);
    const client = await startEchoClient(dir!, seg!.c.netns, task.address, PORT);
    await sleep(500);
    // The source fails once the dest holds its restored copy, its veth on B's bridge with the task's MAC.
    const rolled = await move('A -> B, rolled back after the restore', () =>
      runMigrate(seg!, task.pid, toB, { args: ['--restore', 'eager'], env: { FERRY_FAULT: 'source.after-restore', FERRY_TEST_FAULTS: '1' }, timeoutMs: 120_000 }),
    );
    const r = rolled.r;
    expect(r.exitCode, describeResult(r)).toBe(1);
    expect(r.error?.sourceState).toBe('running');
    expect(r.error?.rollbackErrors ?? []).toEqual([]);
    await waitFor(() => noHoldLeft(task.pid), 10_000, "the original's hold tables deleted");
    expect(linkExists(seg!.a, task.outerLink)).toBe(true);
    // The abort killed the copy: its veth went with it (or was removed), so B's bridge holds no second station.
    await waitFor(() => !linkExists(seg!.b, task.outerLink), 10_000, "the copy's veth gone from B");
    await sleep(1_500);
    expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
    expect(tcpEchoesOnNewConnection(seg!.c.netns, task.address, PORT)).toBe(true);
    const s = await client.finish();
    report('echo server', s, [rolled]);
    expectIntact(s, client.localPort);
  }, 300_000);

  it('`ferry migrate` killed after the dump: its freeze guard lets go of the hold and undoes the dump before the thaw; --resume rolls back', async () => {
    const task = await echoTask(3);
    const client = await startEchoClient(dir!, seg!.c.netns, task.address, PORT);
    await sleep(500);
    const state = makeTempDir('ferry-e2e-net-state-');
    try {
      const env = { FERRY_STATE_DIR: state };
      const killed = await move('A -> B, the CLI killed after the dump', () => runMigrate(seg!, task.pid, toB, { env: { ...env, FERRY_FAULT: 'source.final-delta:kill', FERRY_TEST_FAULTS: '1' }, timeoutMs: 60_000 }));
      expect(killed.r.exitCode, describeResult(killed.r)).not.toBe(0);
      // The guard fires on its own (its agent gone): bounded, it lets go of the hold and thaws.
      await waitFor(() => noHoldLeft(task.pid) && readStat(task.pid)?.state !== 'T', 30_000, 'the guard to let go and thaw');
      await sleep(1_500);
      expect(udpEchoes(seg!.c.netns, task.address, PORT)).toBe(true);
      const resumed = await startFerry(['migrate', '--resume', 'all', '--json'], { host: seg!.a, env, timeoutMs: 60_000 }).done;
      expect(resumed.exitCode, describeResult(resumed)).toBe(1);
      expect(linkExists(seg!.a, task.outerLink)).toBe(true);
      const s = await client.finish();
      report('echo server', s, [killed]);
      expectIntact(s, client.localPort);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  }, 180_000);
});

