/**
 * The dest's Negotiate answer for a task's own network, against the real kernel on the L2 segment: a Dest
 * service runs in B's namespace (this test's main thread is in B while it serves) and answers whether its bridge
 * is usable and who else answers the task's addresses on the segment (with IPv6: a dual-stack task, its IPv6
 * address probed by DAD). A task started with `ferry run --net` on A answers its own probes with its own MAC,
 * which is free; C's addresses, or the task's addresses asked with another MAC, are taken; a missing bridge, a link that is no bridge and a bridge that is down are named; a malformed
 * TaskNetwork (a non-canonical IPv6 address too) is refused before anything. The task is killed and every link removed.
 */
import { existsSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { answerTaskNetwork } from '../../dest-agent/task-network-answer.js';
import { THIS_NETNS } from '../../shared/kernel/netns-socket.js';
import { listLinks } from '../../shared/kernel/rtnetlink.js';
import type { TaskNetworkMessage } from '../../shared/transport/messages.js';
import { runTask, type RunningTask } from '../../source-agent/run-task.js';
import { createL2Segment, type L2Segment } from '../../testbed/l2-segment.js';
import { enterNetns, ip } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { waitFor } from '../../testbed/wait-for.js';
import { sourcePeer, startDest, type DestUnderTest } from '../support/dest-grpc.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const runnable = canRun('task network negotiate', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'));

describe.runIf(runnable)("the dest's answer to a task's own network", () => {
  let seg: L2Segment;
  let dir: string;
  let task: RunningTask | undefined;
  let dest: DestUnderTest | undefined;
  let leave: (() => void) | undefined;
  const MAC = '02:77:00:00:00:21';

  beforeAll(async () => {
    seg = await createL2Segment({ ipv6: true });
    dir = makeTempDir('ferry-net-negotiate-');
    leave = enterNetns(seg.a.netns);
    try {
      task = await runTask({ command: 'sleep', args: ['60'], name: 'net-negotiate', logDir: dir, network: { net: [`${seg.taskAddress(0)}/24`, `${seg.ipv6!.taskAddress(0)}/64`], mac: MAC } });
    } finally {
      leave();
    }
    leave = enterNetns(seg.b.netns);
    dest = await startDest();
    await ip(['-n', seg.b.name, 'link', 'add', 'down0', 'type', 'bridge']); // a bridge left down
  });
  afterAll(async () => {
    await dest?.close();
    leave?.();
    if (task) {
      process.kill(task.pid, 'SIGKILL');
      await waitFor(() => !existsSync(`/proc/${task!.pid}`), 5_000, 'the task to exit');
    }
    await seg?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const ask = async (net: TaskNetworkMessage, to: DestUnderTest = dest!) => {
    const answer = await to.client.negotiate({ source: sourcePeer([1]), taskNetwork: net });
    expect(answer.dest.features).toContain('task-network');
    return answer.taskNetwork;
  };
  const net = (over: Partial<TaskNetworkMessage> = {}): TaskNetworkMessage => ({ ...task!.network!, ...over });

  it("the running original answers with the task's own MAC: free", async () => {
    expect(listLinks(THIS_NETNS).some((l) => l.name === 'ferry0')).toBe(true); // we are in B
    expect(await ask(net())).toEqual({ bridge: 'ferry0', bridgeProblem: '', taken: [] });
  });

  it('another MAC answering is a taken address: the task under another MAC, and C (IPv4 and IPv6)', async () => {
    const cMac = listLinks(seg.c.netns).find((l) => l.name === 'eth0')!.mac;
    const v6 = seg.ipv6!;
    const addresses = [`${seg.taskAddress(0)}/24`, `${seg.c.address}/24`, `${seg.taskAddress(9)}/24`, `${v6.taskAddress(0)}/64`, `${v6.c}/64`, `${v6.taskAddress(9)}/64`];
    const answer = await ask(net({ mac: '02:77:00:00:00:99', addresses }));
    expect(answer!.bridgeProblem).toBe('');
    expect(answer!.taken).toEqual([
      { address: seg.taskAddress(0), macs: [MAC] },
      { address: seg.c.address, macs: [cMac] },
      { address: v6.taskAddress(0), macs: [MAC] },
      { address: v6.c, macs: [cMac] },
    ]);
  });

  it("names a missing bridge, a link that is no bridge and a bridge that is down (the dest's --bridge first)", async () => {
    expect(await ask(net({ bridge: 'nobr1' }))).toMatchObject({ bridge: 'nobr1', bridgeProblem: 'no link nobr1' });
    const configured = await startDest({ bridge: 'nobr0' });
    try {
      expect(await ask(net(), configured)).toMatchObject({ bridge: 'nobr0', bridgeProblem: 'no link nobr0' });
    } finally {
      await configured.close();
    }
    expect((await answerTaskNetwork(net(), 'eth0')).bridgeProblem).toMatch(/eth0 is a veth, not a bridge/);
    expect((await answerTaskNetwork(net(), 'down0')).bridgeProblem).toBe('down0 is down');
  });

  it('refuses a malformed TaskNetwork before anything', async () => {
    await expectFerryRejection(dest!.client.negotiate({ source: sourcePeer([1]), taskNetwork: net({ mac: 'ff:ff:ff:ff:ff:ff' }) }), 'REQUEST_INVALID');
    await expectFerryRejection(dest!.client.negotiate({ source: sourcePeer([1]), taskNetwork: net({ addresses: [] }) }), 'REQUEST_INVALID');
    await expectFerryRejection(dest!.client.negotiate({ source: sourcePeer([1]), taskNetwork: net({ addresses: [`${seg.ipv6!.taskAddress(0).replace('::', ':0::')}/64`] }) }), 'REQUEST_INVALID');
  });

  it('no task network asked: no answer', async () => {
    expect((await dest!.client.negotiate({ source: sourcePeer([1]) })).taskNetwork ?? null).toBeNull();
  });
});
