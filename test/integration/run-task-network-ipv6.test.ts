/**
 * `ferry run --net` with IPv6 against the real kernel, as host A of the L2 segment with IPv6 (this test process's
 * main thread is in A's namespace for the whole file): a dual-stack task gets both addresses (the IPv6 one
 * without DAD: usable at once), a default route per family (IPv6 via A's own global address in the prefix),
 * both announced at the start (C's stale entries corrected), readTaskNetwork reads both back (never the
 * link-local one), and C reaches the task over IPv6; an IPv6-only task takes a link-local --gateway6; an IPv6
 * address in use on the segment or on this host is refused before anything is made.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { THIS_NETNS } from '../../shared/kernel/netns-socket.js';
import { readTaskNetwork } from '../../shared/kernel/read-task-network.js';
import { listIpv6Addresses, listLinks } from '../../shared/kernel/rtnetlink.js';
import { runTask, type RunningTask, type RunTaskOptions } from '../../source-agent/run-task.js';
import { createL2Segment, type L2Segment, type L2SegmentIpv6 } from '../../testbed/l2-segment.js';
import { enterNetns, ip, runTool, tcpAnswers } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { waitFor } from '../../testbed/wait-for.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const runnable = canRun('ferry run --net (IPv6)', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'));

const madeHere = (): { links: string[]; names: string[] } => ({
  links: listLinks(THIS_NETNS)
    .map((l) => l.name)
    .sort(),
  names: readdirSync('/run/netns').filter((n) => n.startsWith('ferry-run-')),
});

describe.runIf(runnable)('ferry run --net with IPv6', () => {
  let seg: L2Segment;
  let v6: L2SegmentIpv6;
  let leave: (() => void) | undefined;
  let dir: string;
  const tasks: RunningTask[] = [];

  beforeAll(async () => {
    seg = await createL2Segment({ ipv6: true });
    v6 = seg.ipv6!;
    dir = makeTempDir('ferry-run-net6-');
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
      await waitFor(() => !listLinks(THIS_NETNS).some((l) => l.name === t.network!.outerLink), 5_000, 'the outer end to go with the task');
    }
  });
  afterAll(async () => {
    leave?.();
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = async (net: RunTaskOptions['network']): Promise<RunningTask> => {
    const t = await runTask({ command: 'sleep', args: ['60'], name: 'net6-task', logDir: dir, network: net });
    tasks.push(t);
    return t;
  };

  it('dual stack: both addresses, a route per family, both announced, read back, and C reaches it over IPv6', async () => {
    const [a4, a6] = [seg.taskAddress(0), v6.taskAddress(0)];
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
    expect(await inTask(['-6', 'route', 'show', 'default'])).toContain(`default via ${v6.a} dev eth0`);
    // What the source agent will read of it (the link-local fe80:: of eth0 is not the task's), and the segment's view.
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await ip(['-n', seg.c.name, 'neigh', 'show', a4, 'dev', seg.c.link])).toContain(`lladdr ${mac}`);
    expect(await ip(['-n', seg.c.name, '-6', 'neigh', 'show', a6, 'dev', seg.c.link])).toContain(`lladdr ${mac}`);
    expect(await tcpAnswers(seg.c.netns, a6)).toBe(true);
    expect(await tcpAnswers(seg.c.netns, a4)).toBe(true);
  });

  it('IPv6 only, normalized, with a link-local --gateway6', async () => {
    const t = await run({ net: [v6.taskAddress(1).toUpperCase().replace('::', ':0:0::') + '/64'], gateway6: 'fe80::1' });
    expect(t.network!.addresses).toEqual([`${v6.taskAddress(1)}/64`]);
    const routes = await runTool('nsenter', [`--net=/proc/${t.pid}/ns/net`, 'ip', '-6', 'route', 'show', 'default']);
    expect(routes).toContain('default via fe80::1 dev eth0');
    expect(readTaskNetwork(t.pid)).toEqual(t.network);
    expect(await tcpAnswers(seg.c.netns, v6.taskAddress(1))).toBe(true);
  });

  it('refuses, before anything is made, an IPv6 address a station answers or this host holds', async () => {
    const before = madeHere();
    await expectFerryRejection(run({ net: [`${seg.taskAddress(3)}/24`, `${v6.c}/64`] }), 'NET_ADDRESS_TAKEN'); // C answers the DAD probe
    await expectFerryRejection(run({ net: [`${v6.a}/64`] }), 'NET_ADDRESS_TAKEN'); // this host's own
    expect(madeHere()).toEqual(before);
  });
});
