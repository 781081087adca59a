/**
 * packet-socket.ts over a fake of the native layer: the socket is made with protocol 0 (it receives nothing until
 * bound) and bound with the ethertype to the link (a send-only one with none: it never queues a frame), and a
 * probe under a flood (a frame always waiting) still lets node's event loop run, and ends at its timeout.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

const native = vi.hoisted(() => ({ socket: [] as number[], bind: [] as Buffer[], flood: false }));
vi.mock('../../shared/kernel/netns-socket.js', () => ({
  socketIn: (_netns: string, _domain: number, _type: number, protocol: number) => {
    native.socket.push(protocol);
    return 99;
  },
}));
vi.mock('../../shared/kernel/rtnetlink.js', () => ({ listLinks: () => [{ name: 'eth0', ifindex: 7, mac: '02:00:00:00:00:01' }] }));
vi.mock('../../shared/native/ptrace.js', () => ({ closeFd: () => undefined, closeFdAsync: () => Promise.resolve() }));
vi.mock('../../shared/native/libc.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../shared/native/libc.js')>()),
  bind: (_fd: number, addr: Uint8Array) => void native.bind.push(Buffer.from(addr)),
  sendto: () => 0,
  recv: (_fd: number, buf: Buffer) => {
    if (!native.flood) return 0;
    buf.fill(0, 0, 60);
    return 60;
  },
}));
const { htons, probeWith, sendRepeated } = await import('../../shared/kernel/packet-socket.js');

const ETH_P_ARP = 0x0806;

describe('packet sockets', () => {
  afterEach(() => {
    native.socket.length = 0;
    native.bind.length = 0;
    native.flood = false;
  });

  it('made with protocol 0, bound to the link with the ethertype; a send-only one bound with none', async () => {
    await probeWith('/x', 'eth0', ETH_P_ARP, () => Buffer.alloc(60), 20, () => undefined);
    await sendRepeated('/x', 'eth0', ETH_P_ARP, Buffer.alloc(60), 1, 0);
    expect(native.socket).toEqual([0, 0]);
    expect(native.bind.map((b) => ({ protocol: b.readUInt16BE(2), ifindex: b.readInt32LE(4) }))).toEqual([
      { protocol: ETH_P_ARP, ifindex: 7 },
      { protocol: 0, ifindex: 7 },
    ]);
    expect(htons(ETH_P_ARP)).toBe(0x0608);
  });

  it('a probe under a flood lets the event loop run, and ends at its timeout', async () => {
    native.flood = true;
    let turns = 0;
    let stopped = false;
    const tick = (): void => {
      turns++;
      if (!stopped) setImmediate(tick);
    };
    setImmediate(tick);
    const start = Date.now();
    const heard = await probeWith('/x', 'eth0', ETH_P_ARP, () => Buffer.alloc(60), 100, () => '02:00:00:00:00:09');
    stopped = true;
    expect(Date.now() - start).toBeLessThan(1_000);
    expect(heard).toEqual(['02:00:00:00:00:09']);
    // Without the yield the loop spins the whole 100 ms and the event loop gets no turn until it ends.
    expect(turns).toBeGreaterThan(10);
  });
});
