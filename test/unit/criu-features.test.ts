/** Which CRIU features a task needs (from a fake /proc), the choice against the flags and peers, and the arguments. */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { criuFeatureArgs, featureChoice, TCP_ESTABLISHED_FEATURE } from '../../shared/criu/criu-features.js';
import { criuDumpArgs, criuRestoreArgs } from '../../shared/criu/criu-runner.js';
import { fdinfoLock, parseProcNetTcp, readTaskCriuNeeds, type TaskCriuNeeds } from '../../shared/kernel/task-criu-needs.js';
import type { PeerInfo } from '../../shared/transport/messages.js';
import { compileMigrateOptions } from '../../source-agent/config/migrate-options.js';
import { fromMigrateRequest, toMigrateRequest } from '../../source-agent/config/migrate-request.js';
import { chooseCriuFeatures } from '../../source-agent/migration/criu-features-choice.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const TCP_HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const tcpLine = (sl: number, local: string, remote: string, st: string, inode: number): string =>
  `   ${sl}: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;

let roots: string[] = [];
afterEach(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  roots = [];
});

/** A fake /proc with one task: its fds (target -> fdinfo text) and its net/tcp, net/tcp6. */
function fakeProc(pid: number, fds: Record<string, { target: string; fdinfo?: string }>, tcp = '', tcp6 = ''): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-fake-proc-'));
  roots.push(root);
  const dir = join(root, String(pid));
  for (const d of ['fd', 'fdinfo', 'net']) mkdirSync(join(dir, d), { recursive: true });
  for (const [fd, f] of Object.entries(fds)) {
    symlinkSync(f.target, join(dir, 'fd', fd));
    writeFileSync(join(dir, 'fdinfo', fd), f.fdinfo ?? 'pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t1\n');
  }
  writeFileSync(join(dir, 'net', 'tcp'), TCP_HEADER + tcp);
  writeFileSync(join(dir, 'net', 'tcp6'), TCP_HEADER + tcp6);
  return root;
}

describe('task CRIU needs from /proc', () => {
  it('finds a flock and a POSIX lock in fdinfo, and nothing in a task without one', () => {
    expect(fdinfoLock('pos:\t0\nflags:\t02100001\nmnt_id:\t27\nino:\t2146430\nlock:\t1: FLOCK  ADVISORY  WRITE 25458 fe:00:2146430 0 EOF\n')).toBe('1: FLOCK  ADVISORY  WRITE 25458 fe:00:2146430 0 EOF');
    expect(fdinfoLock('pos:\t0\nflags:\t02\n')).toBeUndefined();
    const root = fakeProc(100, {
      '0': { target: '/dev/null' },
      '3': { target: '/tmp/lk', fdinfo: 'pos:\t0\nlock:\t1: POSIX  ADVISORY  WRITE 100 fe:00:99 0 EOF\n' },
    });
    expect(readTaskCriuNeeds([100], root).fileLocks).toEqual([{ pid: 100, lock: '1: POSIX  ADVISORY  WRITE 100 fe:00:99 0 EOF' }]);
    expect(readTaskCriuNeeds([100, 101], fakeProc(101, { '0': { target: '/dev/null' } })).fileLocks).toEqual([]);
  });

  it('counts the task\'s own connected sockets, in any state but LISTEN and CLOSE, in tcp and tcp6', () => {
    const tcp =
      tcpLine(0, '0100007F:1F90', '00000000:0000', '0A', 500) + // listening: no flag needed
      tcpLine(1, '0100007F:1F90', '0100007F:A000', '01', 501) + // established: ours
      tcpLine(2, '0100007F:A001', '0100007F:1F90', '01', 999) + // established, another process's socket
      tcpLine(3, '00000000:0000', '00000000:0000', '07', 503); // unconnected
    const tcp6 = tcpLine(0, '00000000000000000000000001000000:1F91', '00000000000000000000000001000000:B000', '08', 504);
    const root = fakeProc(
      200,
      { '3': { target: 'socket:[500]' }, '4': { target: 'socket:[501]' }, '5': { target: 'socket:[503]' }, '6': { target: 'socket:[504]' }, '7': { target: 'pipe:[77]' } },
      tcp,
      tcp6,
    );
    const needs = readTaskCriuNeeds([200], root);
    expect(needs.tcpConnections).toEqual([
      { pid: 200, local: '0100007F:1F90', remote: '0100007F:A000', state: 'ESTABLISHED' },
      { pid: 200, local: '00000000000000000000000001000000:1F91', remote: '00000000000000000000000001000000:B000', state: 'CLOSE_WAIT' },
    ]);
    expect(needs.fileLocks).toEqual([]);
  });

  it('parses /proc/net/tcp and skips a short line; a vanished task is no need', () => {
    expect(parseProcNetTcp(TCP_HEADER + tcpLine(0, '0100007F:0050', '0100007F:C350', '01', 42) + '  junk\n')).toEqual([{ inode: 42, local: '0100007F:0050', remote: '0100007F:C350', state: 1 }]);
    expect(readTaskCriuNeeds([999_999], fakeProc(1234, {}))).toEqual({ fileLocks: [], tcpConnections: [] });
  });

  it('reads this very process: a real socket pair over loopback is seen once connected', async () => {
    const net = await import('node:net');
    const server = net.createServer();
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const port = (server.address() as { port: number }).port;
    const accepted = new Promise<import('node:net').Socket>((ok) => server.once('connection', ok));
    const client = net.connect(port, '127.0.0.1');
    await new Promise<void>((ok) => client.once('connect', ok));
    const peer = await accepted;
    try {
      const states = readTaskCriuNeeds([process.pid]).tcpConnections.filter((c) => c.local.endsWith(`:${port.toString(16).toUpperCase().padStart(4, '0')}`) || c.remote.endsWith(`:${port.toString(16).toUpperCase().padStart(4, '0')}`));
      expect(states.map((s) => s.state)).toEqual(['ESTABLISHED', 'ESTABLISHED']);
    } finally {
      client.destroy();
      peer.destroy();
      await new Promise<void>((ok) => server.close(() => ok()));
    }
  });
});

const NONE: TaskCriuNeeds = { fileLocks: [], tcpConnections: [] };
const LOCKED: TaskCriuNeeds = { fileLocks: [{ pid: 5, lock: '1: FLOCK  ADVISORY  WRITE 5 fe:00:1 0 EOF' }], tcpConnections: [] };
const CONNECTED: TaskCriuNeeds = { fileLocks: [], tcpConnections: [{ pid: 5, local: '0100007F:1F90', remote: '0100007F:A000', state: 'ESTABLISHED' }] };
const dest = (features: string[]): PeerInfo => ({ ferryVersion: '', protocolVersions: [1], pageSize: 4096, arch: 'x64', kernel: '', hostname: 'd', trackers: [], criuVersion: '4.2.1', criuProblem: '', features });
const AUTO = { fileLocks: 'auto', tcpEstablished: 'auto' } as const;

describe('choosing the CRIU features', () => {
  it('auto follows the tree; on and off force it', () => {
    expect(chooseCriuFeatures(AUTO, NONE, 'nftables', dest([])).features).toEqual({ fileLocks: false, tcpEstablished: false });
    expect(chooseCriuFeatures(AUTO, LOCKED, undefined, dest([])).features).toEqual({ fileLocks: true, tcpEstablished: false });
    expect(chooseCriuFeatures({ ...AUTO, fileLocks: 'off' }, LOCKED, undefined, dest([])).features.fileLocks).toBe(false);
    expect(chooseCriuFeatures({ ...AUTO, fileLocks: 'on' }, NONE, undefined, dest([])).features.fileLocks).toBe(true);
    const tcp = chooseCriuFeatures(AUTO, CONNECTED, 'nftables', dest([TCP_ESTABLISHED_FEATURE]));
    expect(tcp).toMatchObject({ features: { fileLocks: false, tcpEstablished: true }, networkLock: 'nftables' });
    expect(chooseCriuFeatures({ ...AUTO, tcpEstablished: 'off' }, CONNECTED, undefined, dest([])).features.tcpEstablished).toBe(false);
  });

  it('established TCP without a network lock on the source, or on the dest, is TCP_LOCK_UNAVAILABLE', () => {
    expectFerryError(() => chooseCriuFeatures(AUTO, CONNECTED, undefined, dest([TCP_ESTABLISHED_FEATURE])), 'TCP_LOCK_UNAVAILABLE');
    expectFerryError(() => chooseCriuFeatures(AUTO, CONNECTED, 'nftables', dest([])), 'TCP_LOCK_UNAVAILABLE');
    expectFerryError(() => chooseCriuFeatures({ ...AUTO, tcpEstablished: 'on' }, NONE, 'iptables', dest([])), 'TCP_LOCK_UNAVAILABLE');
  });

  it('the flags compile to choices, travel in the MigrateRequest, and a bad value is BAD_ARGUMENT', () => {
    const base = { pid: 10, to: '127.0.0.1:7070' };
    // auto by default: a rollback after such a dump undoes it (tcp-dump-undo.ts), the connections survive.
    expect(compileMigrateOptions(base).criuFeatures).toEqual({ fileLocks: 'auto', tcpEstablished: 'auto' });
    expect(compileMigrateOptions({ ...base, tcpEstablished: 'off' }).criuFeatures.tcpEstablished).toBe('off');
    expect(compileMigrateOptions(fromMigrateRequest(toMigrateRequest({ ...base, fileLocks: 'on', tcpEstablished: 'off' }))).criuFeatures).toEqual({ fileLocks: 'on', tcpEstablished: 'off' });
    expectFerryError(() => compileMigrateOptions({ ...base, fileLocks: 'yes' }), 'BAD_ARGUMENT');
    expectFerryError(() => compileMigrateOptions({ ...base, tcpEstablished: '' }), 'BAD_ARGUMENT');
    expect(featureChoice(undefined)).toBe('auto');
  });
});

describe('criu arguments of the features', () => {
  it('dump gets the network lock with --tcp-established; restore does not (it is in the images)', () => {
    expect(criuFeatureArgs({ fileLocks: true, tcpEstablished: true }, 'nftables')).toEqual(['--tcp-established', '--network-lock', 'nftables', '--file-locks']);
    expect(criuFeatureArgs({ fileLocks: false, tcpEstablished: false }, 'nftables')).toEqual([]);
    const dump = criuDumpArgs({ criu: '/c', pid: 7, imagesDir: '/i', logFile: '/l', tcpEstablished: true, networkLock: 'nftables' });
    expect(dump[dump.indexOf('--network-lock') + 1]).toBe('nftables');
    expect(criuDumpArgs({ criu: '/c', pid: 7, imagesDir: '/i', logFile: '/l', networkLock: 'nftables' })).not.toContain('--network-lock');
    const restore = criuRestoreArgs({ criu: '/c', imagesDir: '/i', logFile: '/l', pidFile: '/p', timeoutMs: 1, tcpEstablished: true, fileLocks: true, networkLock: 'nftables' });
    expect(restore).toEqual(expect.arrayContaining(['--tcp-established', '--file-locks']));
    expect(restore).not.toContain('--network-lock');
  });
});
