/**
 * The harness's link cuts. cutLink/healLink (a neighbour entry to nowhere): a cut drops packets both ways while a
 * live TCP connection stays open, a heal lets that same connection deliver what was sent meanwhile, both are
 * idempotent, and destroy() leaves no namespace. downLink/upLink (`ip link set down` on the veth): the same facts,
 * plus a new connection refused at once during the down and the time from `up` to the delivery, measured for a
 * 5 s down (and 60 s with FERRY_FAULT_MATRIX=full).
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLinkProbe, type LinkProbe } from '../../testbed/link-probe.js';
import { createTwoHosts, type TwoHosts } from '../../testbed/netns-hosts.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const runnable = canRun('testbed link cut', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
/** How long a cut must hold back a line to count as dropped: many RTTs of a veth (tens of microseconds). */
const HELD_MS = 1_500;
/** After a heal: TCP retransmits with backoff (200 ms doubling), so a 1.5 s cut is retried within ~2 s. */
const HEAL_MS = 10_000;
/** Measured here: what was written during a 5 s or 60 s down arrives within ~0.6 s of the `up`. */
const DELIVERED_AFTER_UP_MS = 3_000;
const DOWN_SECONDS = process.env.FERRY_FAULT_MATRIX === 'full' ? [5, 60] : [5];

/** A line each way is held back (not delivered within HELD_MS) while the connection stays open. */
async function expectHeldBothWays(p: LinkProbe, tag: string): Promise<void> {
  p.connector.send(`${tag}-to-dst`);
  p.listener.send(`${tag}-to-src`);
  await expect(p.listener.waitForLine(`${tag}-to-dst`, HELD_MS)).rejects.toThrow(/timed out/);
  await expect(p.connector.waitForLine(`${tag}-to-src`, HELD_MS)).rejects.toThrow(/timed out/);
  expect(p.connected()).toBe(true);
}

describe.skipIf(!runnable)('testbed: cutLink / healLink and downLink / upLink', () => {
  let hosts: TwoHosts | undefined;
  let probe: LinkProbe | undefined;

  beforeAll(async () => {
    hosts = await createTwoHosts();
    probe = await startLinkProbe(hosts);
  });

  afterAll(async () => {
    await probe?.close();
    await hosts?.destroy();
  });

  it('a live connection carries lines both ways', async () => {
    probe!.connector.send('hello');
    probe!.listener.send('hi');
    await probe!.listener.waitForLine('hello', 5_000);
    await probe!.connector.waitForLine('hi', 5_000);
  });

  it('a cut stops traffic both ways; the heal delivers it on the same connection', async () => {
    const h = hosts!;
    const p = probe!;
    await h.cutLink();
    await h.cutLink(); // idempotent
    expect(await h.linkIsCut()).toBe(true);
    await expectHeldBothWays(p, 'during-cut');

    await h.healLink();
    await h.healLink(); // idempotent
    expect(await h.linkIsCut()).toBe(false);
    await p.listener.waitForLine('during-cut-to-dst', HEAL_MS);
    await p.connector.waitForLine('during-cut-to-src', HEAL_MS);
    // The same connection: nothing reconnected, nothing reset.
    expect(p.connected()).toBe(true);
    expect(p.listener.received()).toEqual(['hello', 'during-cut-to-dst']);
    expect(p.connector.received()).toEqual(['hi', 'during-cut-to-src']);
  });

  it('healing an intact link changes nothing', async () => {
    await hosts!.healLink();
    probe!.connector.send('after');
    await probe!.listener.waitForLine('after', 5_000);
  });

  it('a new connection cannot be made during a cut, and can after the heal', async () => {
    const h = hosts!;
    await h.cutLink();
    try {
      await expect(startLinkProbe(h, h.dst, HELD_MS)).rejects.toThrow(/timed out/);
    } finally {
      await h.healLink();
    }
    const again = await startLinkProbe(h, h.dst);
    try {
      again.connector.send('x');
      await again.listener.waitForLine('x', 5_000);
    } finally {
      await again.close();
    }
  });

  it('a down stops traffic both ways without an error on either side; the up delivers it on the same connection', async () => {
    const h = hosts!;
    const p = probe!;
    await h.downLink();
    await h.downLink(); // idempotent
    expect(await h.linkIsDown()).toBe(true);
    expect(await h.linkIsCut()).toBe(false); // the other kind of cut is not involved
    await expectHeldBothWays(p, 'during-down');

    await h.upLink();
    await h.upLink(); // idempotent
    expect(await h.linkIsDown()).toBe(false);
    await p.listener.waitForLine('during-down-to-dst', HEAL_MS);
    await p.connector.waitForLine('during-down-to-src', HEAL_MS);
    expect(p.connected()).toBe(true);
  });

  it('a new connection from the downed side fails at once (ENETUNREACH), and succeeds after the up', async () => {
    const h = hosts!;
    await h.downLink();
    try {
      await expect(startLinkProbe(h, h.src, HELD_MS)).rejects.toThrow(/ENETUNREACH/);
    } finally {
      await h.upLink();
    }
    const again = await startLinkProbe(h, h.src);
    try {
      again.connector.send('x');
      await again.listener.waitForLine('x', 5_000);
    } finally {
      await again.close();
    }
  });

  for (const seconds of DOWN_SECONDS) {
    it(
      `an open connection survives a ${seconds} s down (no RST) and delivers within ${DELIVERED_AFTER_UP_MS / 1000} s of the up`,
      async () => {
        const h = hosts!;
        const p = probe!;
        await h.downLink();
        p.connector.send(`down-${seconds}-to-dst`);
        p.listener.send(`down-${seconds}-to-src`);
        await sleep(seconds * 1000);
        expect(p.connected()).toBe(true);
        const up = Date.now();
        await h.upLink();
        await p.listener.waitForLine(`down-${seconds}-to-dst`, DELIVERED_AFTER_UP_MS);
        await p.connector.waitForLine(`down-${seconds}-to-src`, DELIVERED_AFTER_UP_MS);
        console.info(`testbed: after a ${seconds} s link down, the open connection delivered ${Date.now() - up} ms after the up`);
        expect(p.connected()).toBe(true);
      },
      seconds * 1000 + 30_000,
    );
  }

  it('destroy() removes both namespaces, with any cut in them', async () => {
    const h = hosts!;
    await h.cutLink();
    await probe!.close();
    await h.destroy();
    expect(existsSync(h.src.netns)).toBe(false);
    expect(existsSync(h.dst.netns)).toBe(false);
  });
});
