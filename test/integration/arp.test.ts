/**
 * ARP on the L2 segment against the real kernel: a probe from A's bridge is answered by the station holding the
 * address (B, C) and by nobody for an absent one, with bounded waits; a gratuitous ARP from A updates C's
 * neighbour entry for the address (the kernel's own ARP code accepting it) and reaches a packet socket on C.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseArpFrame, probeArp, sendGratuitousArp } from '../../shared/kernel/arp.js';
import { socketIn } from '../../shared/kernel/netns-socket.js';
import { listLinks } from '../../shared/kernel/rtnetlink.js';
import { Errno, recv } from '../../shared/native/libc.js';
import { closeFd } from '../../shared/native/ptrace.js';
import { SystemCallError } from '../../shared/errors/ferry-error.js';
import { createL2Segment, type L2Segment } from '../../testbed/l2-segment.js';
import { ip } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const runnable = canRun('arp', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
const macOf = (netns: string, link: string): string => listLinks(netns).find((l) => l.name === link)!.mac;

describe.runIf(runnable)('ARP probe and gratuitous ARP', () => {
  let seg: L2Segment;
  beforeAll(async () => {
    seg = await createL2Segment();
  });
  afterAll(async () => {
    await seg?.destroy();
  });

  it('a probe is answered by the station that holds the address, and by nobody for an absent one', async () => {
    expect(await probeArp(seg.a.netns, seg.bridge, seg.b.address, 300)).toEqual([macOf(seg.b.netns, seg.bridge)]);
    expect(await probeArp(seg.a.netns, seg.bridge, seg.c.address, 300)).toEqual([macOf(seg.c.netns, seg.c.link)]);
    const t0 = Date.now();
    expect(await probeArp(seg.a.netns, seg.bridge, seg.taskAddress(9), 300)).toEqual([]);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(1_500);
  });

  it('a probe with sender IP 0.0.0.0 teaches the answering station nothing', async () => {
    await ip(['-n', seg.c.name, 'neigh', 'flush', 'dev', seg.c.link]);
    await probeArp(seg.a.netns, seg.bridge, seg.c.address, 200);
    const entries = await ip(['-n', seg.c.name, 'neigh', 'show', 'dev', seg.c.link]);
    expect(entries).not.toContain(seg.a.address);
  });

  it('an aborted probe stops at once', async () => {
    const ac = new AbortController();
    const p = probeArp(seg.a.netns, seg.bridge, seg.taskAddress(9), 5_000, ac.signal);
    setTimeout(() => ac.abort(), 50);
    const t0 = Date.now();
    await expect(p).rejects.toThrow();
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it("a gratuitous ARP updates C's neighbour entry and is seen by a packet socket on C", async () => {
    const address = seg.taskAddress(7);
    const mac = '02:77:00:00:07:07';
    await ip(['-n', seg.c.name, 'neigh', 'replace', address, 'lladdr', '02:77:00:00:99:99', 'nud', 'stale', 'dev', seg.c.link]);
    // A listener on C: every ARP frame of eth0, read after the announcement.
    const fd = socketIn(seg.c.netns, 17, 3 | 0x80000 | 0x800, 0x0608);
    try {
      await sendGratuitousArp(seg.a.netns, seg.bridge, address, mac, 2, { intervalMs: 20 });
      await new Promise((r) => setTimeout(r, 100));
      const seen = [];
      const buf = Buffer.alloc(2048);
      for (;;) {
        let n: number;
        try {
          n = recv(fd, buf);
        } catch (e) {
          if (e instanceof SystemCallError && e.errno === Errno.EAGAIN) break;
          throw e;
        }
        const m = parseArpFrame(buf.subarray(0, n));
        if (m) seen.push(m);
      }
      expect(seen.filter((m) => m.senderIp === address && m.targetIp === address && m.senderMac === mac && m.op === 'request')).toHaveLength(2);
    } finally {
      closeFd(fd);
    }
    const entry = await ip(['-n', seg.c.name, 'neigh', 'show', address, 'dev', seg.c.link]);
    expect(entry).toContain(`lladdr ${mac}`);
  });

  it('parseArpFrame ignores what is not IPv4-over-Ethernet ARP', () => {
    expect(parseArpFrame(Buffer.alloc(60))).toBeUndefined();
    expect(parseArpFrame(Buffer.alloc(10))).toBeUndefined();
  });
});
