/**
 * IPv6 neighbor discovery on the L2 segment (with IPv6) against the real kernel, through address-announce.ts:
 * a DAD probe from A's bridge is answered by the station holding the address (B, C: their kernels' NAs) and by
 * nobody for an absent one, with bounded waits, and teaches the answering station nothing; an unsolicited NA
 * from A updates C's neighbour entry for the address (the kernel's own ndisc accepting it, override set); an
 * IPv4 address goes to ARP the same way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { announceAddress, probeAddress } from '../../shared/kernel/address-announce.js';
import { listLinks } from '../../shared/kernel/rtnetlink.js';
import { createL2Segment, type L2Segment, type L2SegmentIpv6 } from '../../testbed/l2-segment.js';
import { ip } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const runnable = canRun('IPv6 neighbor discovery', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
const macOf = (netns: string, link: string): string => listLinks(netns).find((l) => l.name === link)!.mac;

describe.runIf(runnable)('IPv6 DAD probe and unsolicited NA', () => {
  let seg: L2Segment;
  let v6: L2SegmentIpv6;
  beforeAll(async () => {
    seg = await createL2Segment({ ipv6: true });
    v6 = seg.ipv6!;
  });
  afterAll(async () => {
    await seg?.destroy();
  });

  it('a probe is answered by the station that holds the address, and by nobody for an absent one', async () => {
    expect(await probeAddress(seg.a.netns, seg.bridge, v6.b, 300)).toEqual([macOf(seg.b.netns, seg.bridge)]);
    expect(await probeAddress(seg.a.netns, seg.bridge, `${v6.c}/64`, 300)).toEqual([macOf(seg.c.netns, seg.c.link)]);
    const t0 = Date.now();
    expect(await probeAddress(seg.a.netns, seg.bridge, v6.taskAddress(9), 300)).toEqual([]);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(1_500);
  });

  it('a probe from :: teaches the answering station nothing', async () => {
    await ip(['-n', seg.c.name, '-6', 'neigh', 'flush', 'dev', seg.c.link]);
    await probeAddress(seg.a.netns, seg.bridge, v6.c, 200);
    const entries = await ip(['-n', seg.c.name, '-6', 'neigh', 'show', 'dev', seg.c.link]);
    expect(entries).not.toContain(v6.a);
  });

  it("an unsolicited NA updates C's neighbour entry for the address", async () => {
    const address = v6.taskAddress(7);
    const mac = '02:77:00:00:07:07';
    await ip(['-n', seg.c.name, '-6', 'neigh', 'replace', address, 'lladdr', '02:77:00:00:99:99', 'nud', 'stale', 'dev', seg.c.link]);
    await announceAddress(seg.a.netns, seg.bridge, mac, `${address}/64`);
    const entry = await ip(['-n', seg.c.name, '-6', 'neigh', 'show', address, 'dev', seg.c.link]);
    expect(entry).toContain(`lladdr ${mac}`);
  });

  it('an IPv4 address is probed and announced by ARP', async () => {
    expect(await probeAddress(seg.a.netns, seg.bridge, seg.c.address, 300)).toEqual([macOf(seg.c.netns, seg.c.link)]);
    const address = seg.taskAddress(8);
    const mac = '02:77:00:00:08:08';
    await ip(['-n', seg.c.name, 'neigh', 'replace', address, 'lladdr', '02:77:00:00:99:98', 'nud', 'stale', 'dev', seg.c.link]);
    await announceAddress(seg.a.netns, seg.bridge, mac, `${address}/24`);
    expect(await ip(['-n', seg.c.name, 'neigh', 'show', address, 'dev', seg.c.link])).toContain(`lladdr ${mac}`);
  });
});
