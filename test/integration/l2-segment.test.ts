/**
 * The three-host L2 segment (testbed/l2-segment.ts): C reaches an address on A's task bridge through the lan
 * bridge (a TCP connect answered, and a TCP exchange with a listener there), B too, and everything goes at
 * destroy(): no namespace of ours left, nothing ever made in this test's own network namespace.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { createL2Segment, liveSegmentNamespaces, type L2Segment } from '../../testbed/l2-segment.js';
import { tcpAnswers } from '../../testbed/netns-names.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const runnable = canRun('l2 segment', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('python3'));
const hostLinks = (): string[] => (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[]).map((l) => l.ifname).sort();

/** One line echoed by a python listener in `netns` on ADDRESS:PORT, sent from C with bash's /dev/tcp. */
async function echoThrough(seg: L2Segment, netns: string, address: string, port: number): Promise<string> {
  const server = spawn('nsenter', [`--net=${netns}`, 'python3', '-c', [
    'import socket,sys',
    `s=socket.create_server(("${address}",${port}))`,
    'print("ready",flush=True)',
    'c,_=s.accept()',
    'c.sendall(c.recv(100))',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
    await once(server.stdout, 'data');
    const out = execFileSync('nsenter', [`--net=${seg.c.netns}`, 'bash', '-c', `exec 3<>/dev/tcp/${address}/${port}; echo hello-from-c >&3; read -t 5 line <&3; echo "$line"`], { encoding: 'utf8', timeout: 10_000 });
    clearTimeout(timer);
    return out.trim();
  } finally {
    if (server.exitCode === null && server.signalCode === null) {
      server.kill('SIGKILL');
      await once(server, 'close');
    }
  }
}

describe.runIf(runnable)('the three-host L2 segment', () => {
  let seg: L2Segment | undefined;
  const before = runnable ? hostLinks() : [];
  afterAll(async () => {
    await seg?.destroy();
  });

  it('C reaches A and B over the lan bridge; A and B reach each other', async () => {
    seg = await createL2Segment();
    expect(seg.a.address).toBe(`10.77.${seg.subnet}.1`);
    expect(seg.taskAddress(0)).toBe(`10.77.${seg.subnet}.100`);
    expect(await tcpAnswers(seg.c.netns, seg.a.address)).toBe(true);
    expect(await tcpAnswers(seg.c.netns, seg.b.address)).toBe(true);
    expect(await tcpAnswers(seg.a.netns, seg.b.address)).toBe(true);
    expect(await tcpAnswers(seg.c.netns, seg.taskAddress(1), undefined, 500)).toBe(false); // nobody has it
    expect(await echoThrough(seg, seg.a.netns, seg.a.address, 7001)).toBe('hello-from-c');
  });

  it('destroy removes every namespace; nothing was made in this namespace', async () => {
    await seg!.destroy();
    expect(liveSegmentNamespaces()).toEqual([]);
    expect(hostLinks()).toEqual(before);
  });
});
