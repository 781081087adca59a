/**
 * readTaskNetwork against the real kernel, on host A of the L2 segment (this test's main thread enters A's
 * namespace for each read, as an agent running there would be): the shape `ferry run --net` makes is read
 * back, a task in the agent's own namespace is none, and every other shape is refused with
 * TASK_NETWORK_UNSUPPORTED naming what was found. Each case's namespaces and processes are removed after it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inNetns } from '../../shared/kernel/netns-socket.js';
import { readTaskNetwork } from '../../shared/kernel/read-task-network.js';
import { createL2Segment, type L2Segment } from '../../testbed/l2-segment.js';
import { addNetns, deleteNetns, ip, NETNS_DIR } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const runnable = canRun('readTaskNetwork', isRoot(), hasCommand('ip'), hasCommand('nsenter'));

describe.runIf(runnable)('readTaskNetwork', () => {
  let seg: L2Segment;
  const made: string[] = [];
  const sleepers: ChildProcess[] = [];
  let n = 0;

  beforeAll(async () => {
    seg = await createL2Segment();
  });
  afterEach(async () => {
    for (const c of sleepers.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await once(c, 'close');
      }
    }
    for (const name of made.splice(0)) await deleteNetns(name);
  });
  afterAll(async () => {
    await seg?.destroy();
  });

  /** A named namespace of this test (removed after the case) with lo up. */
  async function netns(): Promise<string> {
    const name = `${seg.a.name}-t${n++}`;
    await addNetns(name);
    made.push(name);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }
  /** A sleep in namespace `name`: the task whose network is read. */
  async function taskIn(path: string): Promise<number> {
    const c = spawn('nsenter', [`--net=${path}`, 'sleep', '60'], { stdio: 'ignore' });
    sleepers.push(c);
    await once(c, 'spawn');
    // nsenter enters the namespace after the spawn: wait (bounded) until it has.
    const want = statSync(path).ino;
    for (const deadline = Date.now() + 5_000; statSync(`/proc/${c.pid}/ns/net`).ino !== want; ) {
      if (Date.now() > deadline) throw new Error(`nsenter (${c.pid}) did not enter ${path} within 5 s`);
      await sleep(5);
    }
    return c.pid!;
  }
  /** A veth: `inner` in namespace t (up, its address if given), `outer` in A (or peerNs; up), on A's bridge
   * unless bridge is false. (Bonds, teams, VRFs and dummies are not built into this kernel: a peer enslaved
   * to a master that is not a bridge is not tested here.) */
  async function veth(t: string, opts: { inner?: string; outer: string; bridge?: boolean; address?: string; peerNs?: string }): Promise<void> {
    const peerNs = opts.peerNs ?? seg.a.name;
    const inner = opts.inner ?? 'eth0';
    await ip(['link', 'add', opts.outer, 'netns', peerNs, 'type', 'veth', 'peer', 'name', inner, 'netns', t]);
    await ip(['-n', t, 'link', 'set', inner, 'address', '02:77:00:00:00:64', 'up']);
    if (opts.address !== undefined) await ip(['-n', t, 'addr', 'add', opts.address, 'dev', inner]);
    await ip(['-n', peerNs, 'link', 'set', opts.outer, ...(opts.bridge === false ? [] : ['master', seg.bridge]), 'up']);
  }
  const readInA = (pid: number): ReturnType<typeof readTaskNetwork> => inNetns(seg.a.netns, () => readTaskNetwork(pid));

  it("reads the shape ferry run --net makes: lo, one veth whose peer is on A's bridge", async () => {
    const t = await netns();
    const address = `${seg.taskAddress(0)}/24`;
    await veth(t, { outer: 'fyt0', address });
    await ip(['-n', t, 'addr', 'add', `${seg.taskAddress(1)}/32`, 'dev', 'eth0']);
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(readInA(pid)).toEqual({ innerLink: 'eth0', mac: '02:77:00:00:00:64', addresses: [address, `${seg.taskAddress(1)}/32`], outerLink: 'fyt0', bridge: 'ferry0' });
  });

  it("a task in the agent's own namespace has no network of its own", async () => {
    const pid = await taskIn(seg.a.netns);
    expect(readInA(pid)).toBeUndefined();
    expect(readTaskNetwork(process.pid)).toBeUndefined();
  });

  it('refuses two links besides lo', async () => {
    const t = await netns();
    await veth(t, { outer: 'fyt1', address: `${seg.taskAddress(2)}/24` });
    await veth(t, { inner: 'eth1', outer: 'fyt1b' });
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/2 links besides lo: eth0 \(veth\), eth1 \(veth\)/);
  });

  it('refuses a namespace with only lo', async () => {
    const pid = await taskIn(`${NETNS_DIR}/${await netns()}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/no link but lo/);
  });

  it('refuses a macvlan', async () => {
    const t = await netns();
    // On a veth of A's own (eth0 is a bridge port, which a macvlan cannot sit on); the pair goes with A.
    await ip(['-n', seg.a.name, 'link', 'add', 'vx0', 'type', 'veth', 'peer', 'name', 'vx1']);
    await ip(['-n', seg.a.name, 'link', 'add', 'mv0', 'link', 'vx0', 'type', 'macvlan', 'mode', 'bridge']);
    await ip(['-n', seg.a.name, 'link', 'set', 'mv0', 'netns', t]);
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/mv0 \(macvlan\) is not a veth/);
  });

  it("refuses an outer end's name criu cannot be given ('@'), before any freeze", async () => {
    const t = await netns();
    await veth(t, { outer: 'fy@t6', address: `${seg.taskAddress(6)}/24` });
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/"fy@t6" holds a character criu cannot be given/);
  });

  it('refuses a peer on no bridge', async () => {
    const t = await netns();
    await veth(t, { outer: 'fyt2', bridge: false, address: `${seg.taskAddress(3)}/24` });
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/fyt2 is on no bridge/);
  });

  it("refuses a peer in a third namespace (even when an ifindex there matches one of A's)", async () => {
    const t = await netns();
    const third = await netns();
    await veth(t, { outer: 'fyt4', bridge: false, peerNs: third, address: `${seg.taskAddress(5)}/24` });
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/in a third namespace/);
  });

  it('refuses a veth without an IPv4 nor a global IPv6 address', async () => {
    const t = await netns();
    await veth(t, { outer: 'fyt5' });
    const pid = await taskIn(`${NETNS_DIR}/${t}`);
    expect(expectFerryError(() => readInA(pid), 'TASK_NETWORK_UNSUPPORTED').detail).toMatch(/no IPv4 nor global IPv6 address/);
  });
});
