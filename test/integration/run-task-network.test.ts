/**
 * `ferry run --net` against the real kernel, acting as host A of the L2 segment (this test process's main
 * thread is in A's namespace for the whole file, so what runTask makes is made in A, as an agent there would):
 * it makes what it says (the namespace pinned by the task alone, eth0 with the MAC, address and default route,
 * the outer end on the bridge, one gratuitous ARP), readTaskNetwork reads it back, C reaches the task across
 * the lan bridge, it composes with --ipc/--mounts private, bad input is refused before anything is made, and a
 * failure at any later step removes everything that was made. With IPv6 on the segment: a dual-stack task gets
 * both addresses (the IPv6 one without DAD: usable at once), a default route per family (IPv6 via A's own
 * global address in the prefix), both announced at the start, readTaskNetwork reads both back (never the
 * link-local one), and C reaches it over IPv6; an IPv6-only task takes a link-local --gateway6; an IPv6 address
 * in use is refused before anything is made. Every task is killed and every link removed.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorKey } from '../../shared/errors/codes.js';
import { THIS_NETNS } from '../../shared/kernel/netns-socket.js';
import { readTaskNetwork } from '../../shared/kernel/read-task-network.js';
import { listIpv4Addresses, listIpv6Addresses, listLinks } from '../../shared/kernel/rtnetlink.js';
import { runTask, type RunningTask, type RunTaskOptions } from '../../source-agent/run-task.js';
import { removeBridgeIfUnused } from '../../source-agent/task-network-setup.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createL2Segment, type L2Segment } from '../../testbed/l2-segment.js';
import { enterNetns, ip, runTool, tcpAnswers } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { waitFor } from '../../testbed/wait-for.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const runnable = canRun('ferry run --net', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'));

/** What a step may have left in A: its links, named namespaces, and addresses. */
function snapshot(): { links: string[]; names: string[] } {
  return {
    links: listLinks(THIS_NETNS)
      .map((l) => l.name)
      .sort(),
    names: readdirSync('/run/netns').filter((n) => n.startsWith('ferry-run-')),
  };
}

describe.runIf(runnable)('ferry run --net', () => {
  let seg: L2Segment;
  let leave: (() => void) | undefined;
  let dir: string;
  const tasks: RunningTask[] = [];

  beforeAll(async () => {
    seg = await createL2Segment({ ipv6: true });
    dir = makeTempDir('ferry-run-net-');
    leave = enterNetns(seg.a.netns);
  });
  afterEach(async () => {
    for (const t of tasks.splice(0)) {
      try {
        process.kill(t.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitFor(() => !existsSync(`/proc/${t.pid}`), 5_000, `task ${t.pid} to exit`);
      // Its namespace, and the veth with it, is torn down after the exit: the next test's snapshot must not see it go.
      const outer = t.network?.outerLink;
      if (outer) await waitFor(() => !listLinks(THIS_NETNS).some((l) => l.name === outer), 5_000, `task ${t.pid}'s veth ${outer} to go`);
    }
    delete process.env.FERRY_FAULT;
    delete process.env.FERRY_TEST_FAULTS;
  });
  afterAll(async () => {
    leave?.();
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = async (net: RunTaskOptions['network'], more: Partial<RunTaskOptions> = {}): Promise<RunningTask> => {
    const t = await runTask({ command: 'sleep', args: ['60'], name: 'net-task', logDir: dir, network: net, ...more });
    tasks.push(t);
    return t;
  };

  it('makes the namespace, the veth on the bridge, the address, the route, and announces the address', async () => {
    const address = seg.taskAddress(0);
    // C holds a stale entry for the address: the gratuitous ARP at the start must correct it.
    await ip(['-n', seg.c.name, 'neigh', 'replace', address, 'lladdr', '02:77:00:00:99:99', 'nud', 'stale', 'dev', seg.c.link]);
    const t = await run({ net: `${address}/24`, mac: '02:77:00:00:00:10' });
    expect(t.network).toMatchObject({ innerLink: 'eth0', mac: '02:77:00:00:00:10', addresses: [`${address}/24`], bridge: 'ferry0' });
    expect(t.network!.outerLink).toMatch(/^fy[0-9a-f]{8}$/);
    // Only the task holds its namespace: the temporary name is gone.
    expect(snapshot().names).toEqual([]);
    const taskNs = `/proc/${t.pid}/ns/net`;
    const links = listLinks(taskNs);
    expect(links.map((l) => l.name).sort()).toEqual(['eth0', 'lo']);
    expect(links.every((l) => l.up)).toBe(true);
    expect(listIpv4Addresses(taskNs).map((a) => `${a.address}/${a.prefix}`)).toEqual(expect.arrayContaining([`${address}/24`]));
    const routes = await runTool('nsenter', [`--net=${taskNs}`, 'ip', 'route', 'show', 'default']);
    expect(routes).toContain(`default via ${seg.a.address} dev eth0`);
    const outer = listLinks(THIS_NETNS).find((l) => l.name === t.network!.outerLink)!;
    expect(outer.up).toBe(true);
    expect(outer.master).toBe(listLinks(THIS_NETNS).find((l) => l.name === 'ferry0')!.ifindex);
    // What the source agent will read of it, and the segment's view.
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await ip(['-n', seg.c.name, 'neigh', 'show', address, 'dev', seg.c.link])).toContain('lladdr 02:77:00:00:00:10');
    expect(await tcpAnswers(seg.c.netns, address)).toBe(true);
    // No descriptor beyond stdio reached the task.
    expect(readdirSync(`/proc/${t.pid}/fd`).map(Number).sort()).toEqual([0, 1, 2]);
    // The task's death takes its namespace and both ends of the veth.
    process.kill(t.pid, 'SIGKILL');
    await waitFor(() => !listLinks(THIS_NETNS).some((l) => l.name === t.network!.outerLink), 5_000, 'the outer end to go with the task');
  });

  it('composes with --ipc private and --mounts private; draws a locally administered MAC', async () => {
    const t = await run({ net: `${seg.taskAddress(1)}/24` }, { isolation: { ipc: 'private', mounts: 'private' } });
    expect(t.network!.mac).toMatch(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/);
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await tcpAnswers(seg.c.netns, seg.taskAddress(1))).toBe(true);
  });

  it('creates a missing bridge (up, no address: no default route)', async () => {
    const t = await run({ net: `${seg.taskAddress(2)}/24`, bridge: 'fytest0' });
    try {
      const br = listLinks(THIS_NETNS).find((l) => l.name === 'fytest0')!;
      expect(br).toMatchObject({ kind: 'bridge', up: true });
      expect(await runTool('nsenter', [`--net=/proc/${t.pid}/ns/net`, 'ip', 'route', 'show', 'default'])).toBe('');
    } finally {
      process.kill(t.pid, 'SIGKILL');
      await waitFor(() => !listLinks(THIS_NETNS).some((l) => l.name === t.network!.outerLink), 5_000, 'the outer end to go');
      await ip(['link', 'del', 'fytest0']);
    }
  });

  it('refuses, before anything is made, an address in use, a link that is not a bridge, and bad syntax', async () => {
    const before = snapshot();
    const refusals: [RunTaskOptions['network'], ErrorKey][] = [
      [{ net: `${seg.b.address}/24` }, 'NET_ADDRESS_TAKEN'], // B answers the probe
      [{ net: `${seg.a.address}/24` }, 'NET_ADDRESS_TAKEN'], // this host's own
      [{ net: `${seg.taskAddress(3)}/24`, bridge: 'eth0' }, 'NET_BRIDGE_NOT_BRIDGE'],
      [{ net: 'fe80::5/64' }, 'BAD_ARGUMENT'],
      [{ net: `${seg.taskAddress(3)}/33` }, 'BAD_ARGUMENT'],
      [{ net: `${seg.taskAddress(3)}/24`, mac: '01:00:5e:00:00:01' }, 'BAD_ARGUMENT'],
      [{ net: `${seg.taskAddress(3)}/24`, gateway: '192.0.2.1' }, 'BAD_ARGUMENT'],
    ];
    for (const [net, key] of refusals) await expectFerryRejection(run(net), key);
    expect(snapshot()).toEqual(before);
  });

  it.each(['run.net-made', 'run.task-started'])('a failure at %s removes all that was made (a bridge made too)', async (point) => {
    const before = snapshot();
    process.env.FERRY_TEST_FAULTS = '1';
    process.env.FERRY_FAULT = point;
    const e = await expectFerryRejection(run({ net: `${seg.taskAddress(4)}/24`, bridge: 'fytest1' }), 'INTERNAL');
    expect(e.message).toContain(point);
    expect(e.rollbackErrors).toEqual([]);
    await waitFor(() => JSON.stringify(snapshot()) === JSON.stringify(before), 5_000, 'every link and name made to be removed');
  });

  it('interrupted (ferry run\'s SIGINT/SIGTERM aborts its signal) while the network is made: CANCELLED, all removed, the bridge it made too', async () => {
    const before = snapshot();
    const controller = new AbortController();
    const made = run({ net: `${seg.taskAddress(6)}/24`, bridge: 'fytest3' }, { signal: controller.signal });
    // Aborted once its first step (the bridge) is made: what follows must undo it, and whatever came after.
    await waitFor(() => listLinks(THIS_NETNS).some((l) => l.name === 'fytest3'), 5_000, 'the bridge to be made');
    controller.abort(new FerryError('CANCELLED', { message: 'interrupted (test)' }));
    const e = await expectFerryRejection(made, 'CANCELLED');
    expect(e.rollbackErrors).toEqual([]);
    await waitFor(() => JSON.stringify(snapshot()) === JSON.stringify(before), 5_000, 'every link and name made to be removed');
  });

  it('a bridge a failing run made is deleted only while it has no ports (another run may have joined it)', async () => {
    await ip(['link', 'add', 'fytest4', 'type', 'bridge']);
    try {
      await ip(['link', 'add', 'fytest4p', 'type', 'veth', 'peer', 'name', 'fytest4q']);
      await ip(['link', 'set', 'fytest4p', 'master', 'fytest4']);
      expect(await removeBridgeIfUnused('fytest4')).toBe(false);
      expect(listLinks(THIS_NETNS).some((l) => l.name === 'fytest4')).toBe(true);
      await ip(['link', 'del', 'fytest4p']);
      expect(await removeBridgeIfUnused('fytest4')).toBe(true);
      expect(listLinks(THIS_NETNS).some((l) => l.name === 'fytest4')).toBe(false);
      expect(await removeBridgeIfUnused('fytest4')).toBe(false);
    } finally {
      for (const link of ['fytest4p', 'fytest4']) if (listLinks(THIS_NETNS).some((l) => l.name === link)) await ip(['link', 'del', link]);
    }
  });

  it('a command that exits at once: everything made is removed', async () => {
    const before = snapshot();
    await expectFerryRejection(runTask({ command: 'false', args: [], name: 'net-false', logDir: dir, network: { net: `${seg.taskAddress(5)}/24` } }), 'BAD_ARGUMENT');
    await waitFor(() => JSON.stringify(snapshot()) === JSON.stringify(before), 5_000, 'every link and name made to be removed');
  });

  it('dual stack: both addresses, a route per family, both announced, read back, and C reaches it over IPv6', async () => {
    const [a4, a6] = [seg.taskAddress(10), seg.ipv6!.taskAddress(0)];
    const mac = '02:77:00:00:00:20';
    // C holds stale entries for both: the announcements at the start must correct them.
    await ip(['-n', seg.c.name, 'neigh', 'replace', a4, 'lladdr', '02:77:00:00:99:99', 'nud', 'stale', 'dev', seg.c.link]);
    await ip(['-n', seg.c.name, '-6', 'neigh', 'replace', a6, 'lladdr', '02:77:00:00:99:99', 'nud', 'stale', 'dev', seg.c.link]);
    const t = await run({ net: [`${a4}/24`, `${a6}/64`], mac });
    expect(t.network).toMatchObject({ innerLink: 'eth0', mac, addresses: [`${a4}/24`, `${a6}/64`], bridge: 'ferry0' });
    const taskNs = `/proc/${t.pid}/ns/net`;
    const eth0 = listLinks(taskNs).find((l) => l.name === 'eth0')!.ifindex;
    expect(listIpv6Addresses(taskNs).filter((a) => a.ifindex === eth0).map((a) => `${a.address}/${a.prefix}`)).toEqual([`${a6}/64`]);
    const inTask = (args: string[]): Promise<string> => runTool('nsenter', [`--net=${taskNs}`, 'ip', ...args]);
    const global6 = await inTask(['-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']);
    expect(global6).toContain('scope global nodad');
    expect(global6).not.toContain('tentative');
    expect(await inTask(['route', 'show', 'default'])).toContain(`default via ${seg.a.address} dev eth0`);
    expect(await inTask(['-6', 'route', 'show', 'default'])).toContain(`default via ${seg.ipv6!.a} dev eth0`);
    // What the source agent will read of it (the link-local fe80:: of eth0 is not the task's), and the segment's view.
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await ip(['-n', seg.c.name, 'neigh', 'show', a4, 'dev', seg.c.link])).toContain(`lladdr ${mac}`);
    expect(await ip(['-n', seg.c.name, '-6', 'neigh', 'show', a6, 'dev', seg.c.link])).toContain(`lladdr ${mac}`);
    expect(await tcpAnswers(seg.c.netns, a6)).toBe(true);
    expect(await tcpAnswers(seg.c.netns, a4)).toBe(true);
  });

  it('IPv6 only, normalized, with a link-local --gateway6', async () => {
    const t = await run({ net: [seg.ipv6!.taskAddress(1).toUpperCase().replace('::', ':0:0::') + '/64'], gateway6: 'fe80::1' });
    expect(t.network!.addresses).toEqual([`${seg.ipv6!.taskAddress(1)}/64`]);
    const routes = await runTool('nsenter', [`--net=/proc/${t.pid}/ns/net`, 'ip', '-6', 'route', 'show', 'default']);
    expect(routes).toContain('default via fe80::1 dev eth0');
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await tcpAnswers(seg.c.netns, seg.ipv6!.taskAddress(1))).toBe(true);
  });

  it('refuses, before anything is made, an IPv6 address a station answers or this host holds', async () => {
    const before = snapshot();
    await expectFerryRejection(run({ net: [`${seg.taskAddress(3)}/24`, `${seg.ipv6!.c}/64`] }), 'NET_ADDRESS_TAKEN'); // C answers the DAD probe
    await expectFerryRejection(run({ net: [`${seg.ipv6!.a}/64`] }), 'NET_ADDRESS_TAKEN'); // this host's own
    expect(snapshot()).toEqual(before);
  });
});
