/**
 * End to end (issue 16, IPv6): a dual-stack server in its own network namespace (`ferry run --net IPv4 --net
 * IPv6` on A of the L2 segment with IPv6) moves A -> B and back B -> A, and its clients on C keep their TCP
 * connections: one over IPv6 and one over IPv4, each sending a numbered line every 10 ms; after each move the
 * same connection (same local port, never a reconnect) has every answer in order, none lost, none duplicated.
 * Each move's longest client gap is printed beside its downtime. After each move a new TCP connection and a UDP
 * echo over IPv6 are answered, and the connection inside the task (over its own ::1) still works.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../../testbed/wait-for.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
import { waitListening } from '../../testbed/workloads/line-client.js';
import { startNetTask, type NetTaskHandle } from '../../testbed/workloads/net-task.js';

const runnable =
  canRun('e2e task network IPv6', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCommand('python3')) && canRun('e2e task network IPv6 (CRIU)', hasCriu());

const PORT = 7310;

const linkExists = (host: { name: string }, link: string): boolean => spawnSync('ip', ['-n', host.name, 'link', 'show', 'dev', link], { timeout: 10_000 }).status === 0;

function expectIntact(s: EchoSummary, localPort: number): void {
  expect(s).toMatchObject({ error: null, lost: 0, duplicated: 0, localPort });
  expect(s.answered).toBe(s.sent);
  expect(s.sent).toBeGreaterThan(50);
}

describe.skipIf(!runnable)('a dual-stack task moves with its IPv6 and IPv4 addresses; its clients over both keep their connections', () => {
  let seg: L2Segment | undefined;
  let toB: DestAgentHandle | undefined;
  let toA: DestAgentHandle | undefined;
  let back: HostPair | undefined;
  let dir: string | undefined;
  let task: NetTaskHandle | undefined;
  const copies: number[] = [];

  beforeAll(async () => {
    requireBuilt();
    dir = makeTempDir('ferry-e2e-net6-');
    seg = await createL2Segment({ ipv6: true });
    back = { src: seg.b, dst: seg.a, enter: (h) => seg!.enter(h), peerOf: (h) => seg!.peerOf(h) };
    [toB, toA] = await Promise.all([startDestAgent(seg), startDestAgent(back)]);
  }, 90_000);

  afterAll(async () => {
    for (const pid of copies) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await task?.stop().catch((e: unknown) => console.warn(`the server not stopped cleanly: ${String(e)}`));
    await Promise.all([toB?.stop(), toA?.stop()]);
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the echo server A -> B -> A: one connection over IPv6 and one over IPv4 throughout; new TCP, UDP and the connection inside answer over IPv6 after each move', async () => {
    const v6 = seg!.ipv6!;
    const [a4, a6] = [seg!.taskAddress(0), v6.taskAddress(0)];
    task = await startNetTask(seg!.a, dir!, 'echo6', { net: `${a4}/${seg!.prefix}`, runArgs: ['--net', `${a6}/${v6.prefix}`], command: ['python3', '-c', ECHO_SERVER, String(PORT), '::'] });
    expect(task.network.addresses).toEqual([`${a4}/24`, `${a6}/64`]);
    await waitListening(seg!.c.netns, a6, PORT);
    const over6 = await startEchoClient(dir!, seg!.c.netns, a6, PORT);
    const over4 = await startEchoClient(mkdirSync(join(dir!, 'v4'), { recursive: true })!, seg!.c.netns, a4, PORT);
    await sleep(500);

    const moves: { what: string; r: FerryResult; from: number }[] = [];
    let pid = task.pid;
    for (const [what, pair, dest, host] of [
      ['A -> B', seg!, toB!, seg!.b],
      ['B -> A', back!, toA!, seg!.a],
    ] as const) {
      const from = Date.now();
      const r = await runMigrate(pair, pid, dest, { args: ['--restore', 'eager'], timeoutMs: 120_000 });
      expect(r.exitCode, describeResult(r)).toBe(0);
      moves.push({ what, r, from });
      pid = r.summary!.restoredPid;
      copies.push(pid);
      expect(linkExists(host, task.network.outerLink)).toBe(true);
      expect(linkExists(pair.src, task.network.outerLink)).toBe(false);
      // The copy announced both addresses: a gratuitous ARP and an unsolicited NA (an IPv6-only peer needs the NA).
      const announced = new RegExp(`the copy's network hold let go.*"announced":\\["${a4.replace(/\./g, '\\.')}","${a6}"\\].*"errors":\\[\\]`);
      await waitFor(() => announced.test(dest.stderrAll()), 10_000, "the dest's announcement of both addresses");
      await sleep(1_000);
      expect(udpEchoes(seg!.c.netns, a6, PORT)).toBe(true);
      expect(tcpEchoesOnNewConnection(seg!.c.netns, a6, PORT)).toBe(true);
      expect(loopbackInsideAnswers(seg!.c.netns, a6, PORT)).toBe(true);
    }

    const [s6, s4] = [await over6.finish(), await over4.finish()];
    for (const [family, s] of [['IPv6', s6], ['IPv4', s4]] as const) {
      for (const [i, m] of moves.entries()) {
        const until = moves[i + 1]?.from ?? Infinity;
        const gap = Math.max(0, ...s.longGaps.filter(([, end]) => end >= m.from && end < until).map(([ms]) => ms));
        console.log(`dual-stack echo server, client over ${family}, ${m.what}: longest client gap ${gap} ms, downtime ${Math.round(m.r.summary!.downtimeMs)} ms`);
      }
      console.log(`client over ${family}: ${s.sent} requests, ${s.lost} lost, ${s.duplicated} duplicated, one connection (local port ${s.localPort})`);
    }
    expectIntact(s6, over6.localPort);
    expectIntact(s4, over4.localPort);
  }, 300_000);
});
