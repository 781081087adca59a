/**
 * The migratability preflight: each check on a fake /proc (read by preflight-facts.ts, as on a real host), the
 * verdicts, --allow, and the FerryError migrate throws.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkPeerInfo } from '../../dest-agent/request-bounds.js';
import { parseCpuFlags } from '../../shared/kernel/cpu-flags.js';
import { parseNetSockets, procNetIp } from '../../shared/kernel/proc-net-sockets.js';
import type { PeerInfo } from '../../shared/transport/messages.js';
import { readPreflightFacts } from '../../source-agent/preflight/preflight-facts.js';
import type { PreflightInput } from '../../source-agent/preflight/preflight-check.js';
import { compileAllow, PREFLIGHT_CHECKS, preflightRefusal, runPreflight, type Finding } from '../../source-agent/preflight/preflight.js';
import { inVfork } from '../../source-agent/preflight/vfork.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const NET_HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const netLine = (sl: number, local: string, remote: string, st: string, inode: number): string =>
  `   ${sl}: ${local} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;
const ALL_CAPS = '000001ffffffffff';
const NO_SYS_RESOURCE = '000001fffeffffff';

interface FakeTask {
  pid: number;
  name?: string;
  state?: string;
  threads?: number;
  uid?: string;
  gid?: string;
  maps?: string;
  smaps?: string;
  fds?: Record<string, { target: string; fdinfo?: string }>;
  net?: Partial<Record<'tcp' | 'tcp6' | 'udp' | 'udp6', string>>;
  ns?: Record<string, string>;
  /** tid -> its state, stack and syscall */
  threadsInKernel?: Record<string, { state: string; stack: string; syscall: string }>;
  /** "start-end" -> what the map_files link points to */
  mapFiles?: Record<string, string>;
}

let roots: string[] = [];
afterEach(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  roots = [];
});

const status = (name: string, state: string, threads: number, uid: string, gid: string): string =>
  `Name:\t${name}\nState:\t${state} (x)\nTgid:\t1\nPid:\t1\nPPid:\t0\nUid:\t${uid}\nGid:\t${gid}\nThreads:\t${threads}\n`;

/** A fake /proc: the tasks, this process as self (CapEff, ids, namespaces) and the host's SysV tables. */
function fakeProc(tasks: FakeTask[], self: { capEff?: string; ns?: Record<string, string>; msg?: string } = {}): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-fake-proc-'));
  roots.push(root);
  const selfDir = join(root, 'self');
  mkdirSync(join(selfDir, 'ns'), { recursive: true });
  writeFileSync(join(selfDir, 'status'), `${status('node', 'S', 1, '0\t0\t0\t0', '0\t0\t0\t0')}CapEff:\t${self.capEff ?? ALL_CAPS}\n`);
  for (const [k, v] of Object.entries(self.ns ?? { ipc: 'ipc:[1]', net: 'net:[2]' })) symlinkSync(v, join(selfDir, 'ns', k));
  mkdirSync(join(root, 'sysvipc'));
  writeFileSync(join(root, 'sysvipc', 'msg'), `       key      msqid perms      cbytes       qnum\n${self.msg ?? ''}`);
  writeFileSync(join(root, 'sysvipc', 'sem'), '       key      semid perms      nsems\n');
  for (const t of tasks) {
    const dir = join(root, String(t.pid));
    for (const d of ['fd', 'fdinfo', 'net', 'ns', 'map_files', 'task']) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'status'), status(t.name ?? 'task', t.state ?? 'S', t.threads ?? 1, t.uid ?? '0\t0\t0\t0', t.gid ?? '0\t0\t0\t0'));
    writeFileSync(join(dir, 'maps'), t.maps ?? '');
    writeFileSync(join(dir, 'smaps'), t.smaps ?? t.maps ?? '');
    for (const [fd, f] of Object.entries(t.fds ?? {})) {
      symlinkSync(f.target, join(dir, 'fd', fd));
      writeFileSync(join(dir, 'fdinfo', fd), f.fdinfo ?? 'pos:\t0\nflags:\t02\n');
    }
    for (const table of ['tcp', 'tcp6', 'udp', 'udp6'] as const) writeFileSync(join(dir, 'net', table), NET_HEADER + (t.net?.[table] ?? ''));
    // Its own namespaces unless told: the host's (this process's) ipc and net.
    for (const [k, v] of Object.entries(t.ns ?? { ipc: 'ipc:[1]', net: 'net:[2]', mnt: 'mnt:[3]' })) symlinkSync(v, join(dir, 'ns', k));
    for (const [tid, th] of Object.entries(t.threadsInKernel ?? { [String(t.pid)]: { state: t.state ?? 'S', stack: '[<0>] do_nanosleep+0x1/0x2\n', syscall: '230 0x0' } })) {
      mkdirSync(join(dir, 'task', tid));
      writeFileSync(join(dir, 'task', tid, 'status'), status('task', th.state, 1, '0\t0\t0\t0', '0\t0\t0\t0'));
      writeFileSync(join(dir, 'task', tid, 'stack'), th.stack);
      writeFileSync(join(dir, 'task', tid, 'syscall'), th.syscall);
    }
    for (const [range, target] of Object.entries(t.mapFiles ?? {})) symlinkSync(target, join(dir, 'map_files', range));
  }
  return root;
}

const peer = (over: Partial<PeerInfo> = {}): PeerInfo => ({
  ferryVersion: '0.1.0',
  protocolVersions: [1],
  pageSize: 4096,
  arch: 'x64',
  kernel: '6.18',
  hostname: 'h',
  trackers: ['hash'],
  criuVersion: '4.2.1',
  criuProblem: '',
  features: ['criu-tcp-established'],
  cpuFlags: ['avx2', 'fpu', 'sse2'],
  addresses: ['127.0.0.1', '::1', '10.77.0.2'],
  ...over,
});

function run(tasks: FakeTask[], o: { self?: Parameters<typeof fakeProc>[1]; input?: Partial<PreflightInput>; allow?: string[] } = {}): Finding[] {
  const root = fakeProc(tasks, o.self);
  const facts = readPreflightFacts(
    tasks.map((t) => t.pid),
    root,
  );
  return runPreflight(
    { ...facts, criuFeatures: { fileLocks: 'auto', tcpEstablished: 'off' }, networkLock: 'nftables', source: peer(), dest: peer({ hostname: 'dest' }), arch: 'x64', ...o.input },
    o.allow,
  );
}

const finding = (findings: Finding[], check: string): Finding => findings.find((f) => f.check === check)!;
const refusals = (findings: Finding[]): string[] => findings.filter((f) => f.verdict === 'refuse').map((f) => f.check);

const MAPS_BASE = '55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\n';

describe('preflight', () => {
  it('a plain task passes every check; the checks that need the dest only note without one', () => {
    const findings = run([{ pid: 100, maps: MAPS_BASE }]);
    expect(findings.map((f) => f.check)).toEqual(PREFLIGHT_CHECKS.map((c) => c.name));
    expect(refusals(findings)).toEqual([]);
    expect(findings.every((f) => /^FERRY-12\d\d$/.test(f.code))).toBe(true);
    const alone = run([{ pid: 100 }], { input: { dest: undefined } });
    expect(refusals(alone)).toEqual([]);
    expect(finding(alone, 'cpu-features').verdict).toBe('note');
  });

  it('capabilities: refuses without CAP_SYS_PTRACE; without CAP_SYS_RESOURCE only a task of other ids (pid00, mlock_setuid)', () => {
    expect(finding(run([{ pid: 100 }], { self: { capEff: '000001fffff7ffff' } }), 'capabilities')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1201' });
    expect(finding(run([{ pid: 100 }], { self: { capEff: NO_SYS_RESOURCE } }), 'capabilities').verdict).toBe('ok');
    const other = finding(run([{ pid: 100, uid: '18943\t18943\t18943\t18943' }], { self: { capEff: NO_SYS_RESOURCE } }), 'capabilities');
    expect(other.verdict).toBe('refuse');
    expect(other.message).toContain('rlimit');
    // A task that setuid'd keeps its saved uid apart: the kernel's prlimit check compares all three.
    expect(finding(run([{ pid: 100, uid: '0\t18943\t0\t18943' }], { self: { capEff: NO_SYS_RESOURCE } }), 'capabilities').verdict).toBe('refuse');
    expect(finding(run([{ pid: 100, uid: '18943\t18943\t18943\t18943' }]), 'capabilities').verdict).toBe('ok');
  });

  it('file locks: refused with --file-locks off, a note with auto', () => {
    const locked = { pid: 100, fds: { '3': { target: '/tmp/lk', fdinfo: 'pos:\t0\nlock:\t1: FLOCK  ADVISORY  WRITE 100 fe:00:99 0 EOF\n' } } };
    expect(finding(run([locked]), 'file-locks').verdict).toBe('note');
    expect(finding(run([locked], { input: { criuFeatures: { fileLocks: 'off', tcpEstablished: 'off' } } }), 'file-locks')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1202' });
  });

  it('tcp: a connected socket is refused with --tcp-established off; with auto it needs a lock on both sides', () => {
    const conn = { pid: 100, fds: { '3': { target: 'socket:[501]' } }, net: { tcp: netLine(0, '0100007F:1F90', '0100007F:A000', '01', 501) } };
    expect(finding(run([conn]), 'tcp-connections')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1203' });
    const auto = { criuFeatures: { fileLocks: 'auto', tcpEstablished: 'auto' } } as const;
    expect(finding(run([conn], { input: auto }), 'tcp-connections').verdict).toBe('note');
    expect(finding(run([conn], { input: { ...auto, networkLock: undefined } }), 'tcp-connections')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1019', side: 'source' });
    expect(finding(run([conn], { input: { ...auto, dest: peer({ features: [] }) } }), 'tcp-connections')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1019', side: 'dest' });
    // A listening socket needs nothing.
    const listen = { pid: 100, fds: { '3': { target: 'socket:[500]' } }, net: { tcp: netLine(0, '00000000:1F90', '00000000:0000', '0A', 500) } };
    expect(finding(run([listen]), 'tcp-connections').verdict).toBe('ok');
  });

  it('local addresses: a socket bound to an address the dest lacks is refused, unless the task has its own netns', () => {
    // 10.77.0.1: its bytes 0A 4D 00 01, read as a little-endian word, print as 01004D0A.
    expect(procNetIp('01004D0A', true)).toBe('10.77.0.1');
    expect(procNetIp('0100007F', true)).toBe('127.0.0.1');
    expect(procNetIp('00000000000000000000000001000000', true)).toBe('::1');
    expect(procNetIp('0000000000000000FFFF00000100007F', true)).toBe('::ffff:127.0.0.1');
    expect(procNetIp('000080FE00000000FF005450FE2B12FE', true)).toBe('fe80::5054:ff:fe12:2bfe');
    expect(parseNetSockets('udp', NET_HEADER + netLine(0, '01004D0A:0035', '00000000:0000', '07', 9))).toEqual([{ table: 'udp', inode: 9, localIp: '10.77.0.1', localPort: 53, state: 7 }]);
    const bound = (ns?: Record<string, string>): FakeTask => ({
      pid: 100,
      fds: { '3': { target: 'socket:[700]' }, '4': { target: 'socket:[701]' } },
      net: { tcp: netLine(0, '01004D0A:1F90', '00000000:0000', '0A', 700), udp: netLine(0, '0100007F:0035', '00000000:0000', '07', 701) },
      ...(ns && { ns }),
    });
    const refused = finding(run([bound()]), 'local-addresses');
    expect(refused).toMatchObject({ verdict: 'refuse', code: 'FERRY-1204', side: 'dest' });
    expect(refused.message).toContain('10.77.0.1:8080');
    expect(finding(run([bound()], { input: { dest: peer({ addresses: ['10.77.0.1'] }) } }), 'local-addresses').verdict).toBe('ok');
    expect(finding(run([bound({ ipc: 'ipc:[1]', net: 'net:[99]' })]), 'local-addresses').verdict).toBe('note');
    expect(finding(run([bound()], { input: { dest: undefined } }), 'local-addresses').verdict).toBe('note');
  });

  it('sysv ipc: shm of the host IPC namespace is refused, of the task\'s own is not; queues of the host give a note', () => {
    const shm = `${MAPS_BASE}7f1e2c000000-7f1e2c100000 rw-s 00000000 00:01 32768                      /SYSV0000abcd (deleted)\n`;
    expect(finding(run([{ pid: 100, maps: shm }]), 'sysv-ipc')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1205' });
    expect(finding(run([{ pid: 100, maps: shm }]), 'sysv-ipc').message).toContain('@0x7f1e2c000000');
    expect(finding(run([{ pid: 100, maps: shm, ns: { ipc: 'ipc:[50]', net: 'net:[2]' } }]), 'sysv-ipc').verdict).toBe('ok');
    expect(finding(run([{ pid: 100 }], { self: { msg: '         1          0   666           0            0\n' } }), 'sysv-ipc').verdict).toBe('note');
  });

  it('huge pages: a hugetlb area (smaps KernelPageSize 2048 kB) is refused; THP is not', () => {
    const smaps = `7f0000000000-7f0000200000 rw-s 00000000 00:0f 1234                       /anon_hugepage (deleted)\nSize:               2048 kB\nKernelPageSize:     2048 kB\n55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]\nAnonHugePages:      2048 kB\nKernelPageSize:        4 kB\n`;
    expect(finding(run([{ pid: 100, smaps }]), 'huge-pages')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1206' });
    expect(finding(run([{ pid: 100, smaps: `${MAPS_BASE}KernelPageSize:        4 kB\n` }]), 'huge-pages').verdict).toBe('ok');
  });

  it('io_uring fds and uprobes areas are refused', () => {
    expect(finding(run([{ pid: 100, fds: { '5': { target: 'anon_inode:[io_uring]' }, '6': { target: 'anon_inode:[eventfd]' } } }]), 'io-uring')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1207', message: '1 io_uring fd(s): pid 100 fd 5' });
    expect(finding(run([{ pid: 100, fds: { '6': { target: 'anon_inode:[eventfd]' } } }]), 'io-uring').verdict).toBe('ok');
    const uprobes = `${MAPS_BASE}7fffff7fe000-7fffff7ff000 r-xp 00000000 00:00 0                          [uprobes]\n`;
    expect(finding(run([{ pid: 100, maps: uprobes }]), 'uprobes')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1208' });
  });

  it('device mappings: a character device other than /dev/zero is refused (stat of map_files)', () => {
    // /dev/null stands in for a GPU node: any character device but /dev/zero (1:5) is refused.
    const dev = (path: string): FakeTask => ({ pid: 100, maps: `7f0000000000-7f0000001000 rw-s 00000000 00:05 6                          ${path}\n`, mapFiles: { '7f0000000000-7f0000001000': path } });
    const refused = finding(run([dev('/dev/null')]), 'device-mappings');
    expect(refused).toMatchObject({ verdict: 'refuse', code: 'FERRY-1209' });
    expect(refused.message).toContain('char 1:3');
    expect(finding(run([dev('/dev/zero')]), 'device-mappings').verdict).toBe('ok');
  });

  it('nsfs handles: an fd onto a namespace outside the tree is refused, onto the tree\'s own is not', () => {
    expect(finding(run([{ pid: 100, fds: { '7': { target: 'net:[4026532999]' } } }]), 'nsfs-handles')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1210' });
    expect(finding(run([{ pid: 100, fds: { '7': { target: 'net:[2]' }, '8': { target: 'pipe:[5]' }, '9': { target: 'socket:[6]' } } }]), 'nsfs-handles').verdict).toBe('ok');
  });

  it('vfork: a thread in D inside vfork is refused (its stack, or the syscall number when the stack is unreadable)', () => {
    const vforkStack = '[<0>] kernel_clone+0x1af/0x3e0\n[<0>] __do_sys_vfork+0x43/0x70\n[<0>] do_syscall_64+0x71/0x280\n';
    expect(inVfork({ state: 'D', stack: vforkStack, syscall: '58' }, 'x64')).toBe(true);
    expect(inVfork({ state: 'D', stack: '', syscall: '58' }, 'x64')).toBe(true);
    expect(inVfork({ state: 'S', stack: vforkStack, syscall: '58' }, 'x64')).toBe(false);
    expect(inVfork({ state: 'D', stack: '[<0>] folio_wait_bit+0x1\n', syscall: '0' }, 'x64')).toBe(false);
    const parent = { pid: 100, state: 'D', threadsInKernel: { '100': { state: 'D', stack: vforkStack, syscall: '58 0x0 0x0' } } };
    expect(finding(run([parent, { pid: 101 }]), 'vfork')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1211' });
  });

  it('zombie threads: a zombie leader with live threads is refused (pthread02); a plain zombie is not', () => {
    expect(finding(run([{ pid: 100, state: 'Z', threads: 2 }]), 'zombie-threads')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1212' });
    expect(finding(run([{ pid: 100, state: 'Z', threads: 1 }]), 'zombie-threads').verdict).toBe('ok');
  });

  it('cpu features: the dest must offer every flag of the source; --allow cpu-features makes it a note', () => {
    expect(parseCpuFlags('processor\t: 0\nflags\t\t: fpu sse2 avx2 fpu\n\nprocessor\t: 1\nflags\t\t: fpu\n')).toEqual(['avx2', 'fpu', 'sse2']);
    expect(parseCpuFlags('processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n')).toEqual(['aes', 'asimd', 'evtstrm', 'fp']);
    const lacking = { input: { dest: peer({ cpuFlags: ['fpu', 'sse2'] }) } };
    expect(finding(run([{ pid: 100 }], lacking), 'cpu-features')).toMatchObject({ verdict: 'refuse', code: 'FERRY-1213', side: 'dest', message: 'the dest h lacks 1 CPU flag(s) of the source: avx2' });
    const allowed = finding(run([{ pid: 100 }], { ...lacking, allow: ['cpu-features'] }), 'cpu-features');
    expect(allowed.verdict).toBe('note');
    expect(allowed.message).toContain('--allow cpu-features');
    expect(finding(run([{ pid: 100 }], { input: { dest: peer({ cpuFlags: undefined }) } }), 'cpu-features').verdict).toBe('note');
  });

  it('the dest bounds what a peer reports of its CPU and addresses', () => {
    expect(() => checkPeerInfo(peer())).not.toThrow();
    expectFerryError(() => checkPeerInfo(peer({ cpuFlags: Array.from({ length: 513 }, (_, i) => `f${i}`) })), 'REQUEST_INVALID');
    expectFerryError(() => checkPeerInfo(peer({ cpuFlags: ['x'.repeat(65)] })), 'REQUEST_INVALID');
    expectFerryError(() => checkPeerInfo(peer({ addresses: Array.from({ length: 257 }, (_, i) => `10.0.${i >> 8}.${i & 255}`) })), 'REQUEST_INVALID');
    expectFerryError(() => checkPeerInfo(peer({ addresses: ['1'.repeat(65)] })), 'REQUEST_INVALID');
  });

  it('--allow takes only overridable checks, as comma lists or repeated', () => {
    expect(compileAllow(['cpu-features', 'cpu-features'])).toEqual(['cpu-features']);
    expect(compileAllow(undefined)).toEqual([]);
    expectFerryError(() => compileAllow(['vfork']), 'BAD_ARGUMENT');
    expectFerryError(() => compileAllow(['cpu-features,nope']), 'BAD_ARGUMENT');
  });

  it('ferry check and ferry migrate refuse a bad PID or --allow before they dial anything', async () => {
    const { checkCommand, CHECK_HELP } = await import('../../cli/commands/check.js');
    const { migrateCommand } = await import('../../cli/commands/migrate.js');
    expect(CHECK_HELP).toContain('--allow CHECK');
    await expect(checkCommand(['1', '2'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
    await expect(checkCommand(['abc'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
    await expect(checkCommand(['42', '--to', '127.0.0.1:9', '--allow', 'io-uring'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
    await expect(checkCommand(['42', '--tcp-established', 'maybe'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
    await expect(migrateCommand(['42', '--to', '127.0.0.1:9', '--allow', 'cpu-features,vfork'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
  });

  it('the refusal migrate throws: the first refusing check\'s code, the others in its detail', () => {
    const findings = run([{ pid: 100, state: 'Z', threads: 3, fds: { '5': { target: 'anon_inode:[io_uring]' } } }], { input: { dest: peer({ cpuFlags: ['fpu'] }) } });
    expect(refusals(findings)).toEqual(['io-uring', 'zombie-threads', 'cpu-features']);
    const e = preflightRefusal(findings)!;
    expect(e.code).toBe('FERRY-1207');
    expect(e).toMatchObject({ phase: 'negotiate', side: 'source', sourceState: 'running' });
    expect(e.detail).toContain('FERRY-1212 zombie-threads');
    expect(e.detail).toContain('FERRY-1213 cpu-features');
    expect(preflightRefusal(run([{ pid: 100 }]))).toBeUndefined();
  });
});
