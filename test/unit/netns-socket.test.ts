/**
 * inNetns (netns-socket.ts) around setns, with libc's setns faked (the real one would move this test's thread):
 * a failed setns back ends the process (no caller may swallow it: node's main thread would stay in the task's
 * namespace), and a namespace path that cannot be opened leaks no fd.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

const calls: number[] = [];
let failOn = 0;
vi.mock('../../shared/native/libc.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../shared/native/libc.js')>()),
  setns: (fd: number) => {
    calls.push(fd);
    if (calls.length === failOn) throw new Error('setns: EINVAL (faked)');
  },
}));
const { inNetns } = await import('../../shared/kernel/netns-socket.js');

describe('inNetns', () => {
  let dir: string;
  let server: Server;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-netns-socket-'));
    server = createServer().listen(join(dir, 'sock'));
    await once(server, 'listening');
  });
  afterEach(() => {
    calls.length = 0;
    failOn = 0;
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    server.close();
    await once(server, 'close');
    rmSync(dir, { recursive: true, force: true });
  });
  const openFds = (): number => readdirSync('/proc/self/fd').length;

  it('aborts the process when setns back fails (no caller can swallow it)', () => {
    // Any file that is not this thread's namespace will do (/proc/self/exe): setns is faked.
    const abort = vi.spyOn(process, 'abort').mockImplementation(() => {
      throw new Error('aborted');
    });
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    failOn = 2;
    expect(() => inNetns('/proc/self/exe', () => 1)).toThrow('aborted');
    expect(abort).toHaveBeenCalledTimes(1);
    expect(String(stderr.mock.calls[0]?.[0])).toContain('setns back from /proc/self/exe failed');
    expect(calls).toHaveLength(2);
  });

  it('goes back and aborts nothing when both setns calls succeed', () => {
    const abort = vi.spyOn(process, 'abort').mockImplementation(() => undefined as never);
    expect(inNetns('/proc/self/exe', () => 7)).toBe(7);
    expect(() => inNetns('/proc/self/exe', () => { throw new Error('fn failed'); })).toThrow('fn failed');
    expect(calls).toHaveLength(4);
    expect(abort).not.toHaveBeenCalled();
  });

  it('leaks no fd when the namespace path exists but cannot be opened (a socket: ENXIO)', () => {
    const before = openFds();
    for (let i = 0; i < 5; i++) expect(() => inNetns(join(dir, 'sock'), () => 1)).toThrow(/ENXIO/);
    expect(openFds()).toBe(before);
    expect(calls).toHaveLength(0);
  });
});
