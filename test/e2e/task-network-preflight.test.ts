/**
 * End to end on the three-host L2 segment (issue 16, part A): `ferry run --net` on A through the compiled CLI,
 * then `ferry check PID --to` and `ferry migrate` against dest agents on B: the task's network is read and
 * found free on B's bridge; a dest agent whose --bridge names no bridge refuses with FERRY-1216, and an address
 * C also holds with FERRY-1217, both before anything is touched (exit 2, the task runs on); `ferry run --net`'s
 * own refusals exit 2 with their codes. Every task, agent and namespace is removed.
 */
import { readdirSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRORS } from '../../shared/errors/codes.js';
import { describeResult, runFerry } from '../../testbed/ferry-process.js';
import { createL2Segment, type L2Segment } from '../../testbed/l2-segment.js';
import { ip } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot, requireBuilt } from '../../testbed/requirements.js';
import { waitFor } from '../../testbed/wait-for.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { hasCriu, runMigrate, startDestAgent, type DestAgentHandle } from '../../testbed/two-hosts.js';
import { runNetTask, startNetTask, type NetTaskHandle } from '../../testbed/workloads/net-task.js';

const runnable = canRun('e2e task network preflight', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare')) && canRun('e2e task network preflight (CRIU)', hasCriu());

interface CheckJson {
  ok: boolean;
  preflight: { check: string; verdict: string; code: string; message: string }[];
}

describe.skipIf(!runnable)("a task's own network, checked between hosts of one L2 segment", () => {
  let seg: L2Segment;
  let dir: string;
  let task: NetTaskHandle | undefined;
  const agents: DestAgentHandle[] = [];

  beforeAll(async () => {
    requireBuilt();
    seg = await createL2Segment();
    dir = makeTempDir('ferry-e2e-net-');
    task = await startNetTask(seg.a, dir, 'net-check', { net: `${seg.taskAddress(0)}/24` });
    agents.push(await startDestAgent(seg, { host: seg.b }));
    agents.push(await startDestAgent(seg, { host: seg.b, args: ['--bridge', 'nobr0'] }));
  }, 60_000);
  afterAll(async () => {
    for (const a of agents) await a.stop();
    await task?.stop();
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function check(to: DestAgentHandle): Promise<CheckJson['preflight'][number]> {
    const r = await runFerry(['check', String(task!.pid), '--to', to.address, '--json'], { host: seg.a, timeoutMs: 60_000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('{"ok"'));
    expect(line, describeResult(r)).toBeDefined();
    return (JSON.parse(line!) as CheckJson).preflight.find((f) => f.check === 'task-network')!;
  }

  it('ferry check: the task network is read on A and free on B', async () => {
    expect(task!.network).toMatchObject({ innerLink: 'eth0', bridge: 'ferry0', addresses: [`${seg.taskAddress(0)}/24`] });
    const f = await check(agents[0]!);
    expect(f, JSON.stringify(f)).toMatchObject({ verdict: 'ok' });
    expect(f.message).toContain(task!.network.outerLink);
  });

  it("a dest whose --bridge is missing: FERRY-1216 from check and from migrate (exit 2), the task runs on", async () => {
    expect(await check(agents[1]!)).toMatchObject({ verdict: 'refuse', code: ERRORS.PREFLIGHT_BRIDGE_MISSING.code });
    const r = await runMigrate(seg, task!.pid, agents[1], { timeoutMs: 60_000 });
    expect(r.exitCode, describeResult(r)).toBe(2);
    expect(r.error?.code).toBe(ERRORS.PREFLIGHT_BRIDGE_MISSING.code);
    expect(process.kill(task!.pid, 0)).toBe(true);
  });

  it('an address C holds too: FERRY-1217', async () => {
    await ip(['-n', seg.c.name, 'addr', 'add', `${seg.taskAddress(0)}/32`, 'dev', seg.c.link]);
    try {
      const f = await check(agents[0]!);
      expect(f).toMatchObject({ verdict: 'refuse', code: ERRORS.PREFLIGHT_ADDRESS_IN_USE.code });
      expect(f.message).toContain(seg.taskAddress(0));
    } finally {
      await ip(['-n', seg.c.name, 'addr', 'del', `${seg.taskAddress(0)}/32`, 'dev', seg.c.link]);
    }
  });

  it("ferry run --net refuses a taken address, a bridge that is not one, and a link-local IPv6 address, with exit 2", async () => {
    const cases: [string, string[], string][] = [
      [`${seg.b.address}/24`, [], ERRORS.NET_ADDRESS_TAKEN.code],
      [`${seg.taskAddress(1)}/24`, ['--bridge', 'eth0'], ERRORS.NET_BRIDGE_NOT_BRIDGE.code],
      ['fe80::7/64', [], ERRORS.BAD_ARGUMENT.code],
    ];
    for (const [net, runArgs, code] of cases) {
      const r = await runNetTask(seg.a, dir, 'net-refused', { net, runArgs });
      expect(r.exitCode, describeResult(r)).toBe(2);
      expect(r.stdout + r.stderr).toContain(code);
    }
  });

  it('ferry run --net interrupted (SIGTERM) while it makes the network: exit 130, its namespace name, veth and bridge removed', async () => {
    const links = async (): Promise<string[]> => ((JSON.parse(await ip(['-n', seg.a.name, '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname)).sort();
    const names = (): string[] => readdirSync('/run/netns').filter((n) => n.startsWith('ferry-run-'));
    const before = { links: await links(), names: names() };
    const controller = new AbortController();
    const run = runNetTask(seg.a, dir, 'net-interrupted', { net: `${seg.taskAddress(2)}/24`, runArgs: ['--bridge', 'fyint0'], signal: controller.signal });
    // Its first step makes the bridge: interrupted there, every later step is undone too.
    await waitFor(async () => (await links()).includes('fyint0'), 20_000, 'ferry run to make its bridge');
    const madeNow = names().filter((n) => !before.names.includes(n));
    controller.abort();
    const r = await run;
    expect(r.exitCode, describeResult(r)).toBe(130);
    expect(r.stderr).toContain(ERRORS.CANCELLED.code);
    await waitFor(async () => JSON.stringify(await links()) === JSON.stringify(before.links), 5_000, "every link of A's made by the run to go");
    await waitFor(() => madeNow.every((n) => !names().includes(n)), 5_000, 'the namespace name it made to go');
  });
});
