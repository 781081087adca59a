/**
 * The experiment issue 16's design asked for first, with raw criu: a task in its own network namespace, held
 * (inet and arp `ferry-hold`, input and output dropping) right before `criu dump --tcp-established
 * --network-lock nftables`, is restored on another "host" still held, and stays held after criu's network
 * unlock (which deletes only its own CRIU-* table). While held, the client's data gets no answer; once the
 * hold is released in the copy's namespace, the same connection carries the answers again, none lost.
 *
 * Hosts are network namespaces of the test's own: A and B, each with a bridge, joined by a veth (one L2
 * segment); the client lives on A's bridge; the task's veth is outer `ferry-ito` on A's bridge, re-created by
 * criu on B's with `--external veth[eth0]:ferry-ito@brB`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addNetworkHold, isNetworkHeld, releaseNetworkHold } from '../../shared/kernel/nft-hold.js';
import { listNftTables } from '../../shared/kernel/nft-tables.js';
import { canRun, criuPath, hasCommand, hasCriu, isRoot } from '../../testbed/requirements.js';
import { ECHO_SERVER, startEchoClient, udpEchoes, type EchoClient } from '../../testbed/workloads/echo-server.js';
import { waitFor } from '../../testbed/wait-for.js';
import { waitListening } from '../../testbed/workloads/line-client.js';

const runnable = canRun('criu netns hold', isRoot(), hasCommand('python3'), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCriu());

const tag = `fyh${process.pid % 100000}`;
const NS = { a: `${tag}-a`, b: `${tag}-b`, t: `${tag}-t` };
const OUTER = 'ferry-ito';
const TASK_IP = '10.79.0.100';
const CLIENT_IP = '10.79.0.1';
const PORT = 7100;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

function topology(): void {
  for (const ns of Object.values(NS)) ip('netns', 'add', ns);
  for (const h of ['a', 'b'] as const) {
    const ns = NS[h];
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'add', `br${h.toUpperCase()}`, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
    ip('-n', ns, 'link', 'set', `br${h.toUpperCase()}`, 'up');
  }
  ip('-n', NS.a, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0', 'netns', NS.b);
  ip('-n', NS.a, 'link', 'set', 'up0', 'master', 'brA', 'up');
  ip('-n', NS.b, 'link', 'set', 'up0', 'master', 'brB', 'up');
  ip('-n', NS.a, 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'brA');
  ip('-n', NS.t, 'link', 'set', 'lo', 'up');
  ip('-n', NS.a, 'link', 'add', OUTER, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.t);
  ip('-n', NS.t, 'link', 'set', 'eth0', 'address', '02:79:00:00:00:64');
  ip('-n', NS.t, 'addr', 'add', `${TASK_IP}/24`, 'dev', 'eth0');
  ip('-n', NS.t, 'link', 'set', 'eth0', 'up');
  ip('-n', NS.a, 'link', 'set', OUTER, 'master', 'brA', 'up');
}

function criu(hostNs: string, args: string[]): { status: number | null; log: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${hostNs}`, criuPath()!, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, log: r.stderr };
}

describe.skipIf(!runnable)('a held network namespace through raw criu (real kernel, real CRIU)', () => {
  let dir: string;
  let launcher: ChildProcess | undefined;
  let client: EchoClient | undefined;
  const pids: number[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-netns-hold-'));
    topology();
  });

  afterAll(() => {
    client?.kill();
    launcher?.kill('SIGKILL');
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('restores the hold with the namespace; it survives criu unlock; released, the same connection answers', async () => {
    // pid 1 of its own pid namespace, in T only; then T's name goes, so that only the task pins it.
    launcher = spawn('unshare', ['--pid', '--fork', 'nsenter', `--net=/run/netns/${NS.t}`, 'setsid', 'python3', '-c', ECHO_SERVER, String(PORT)], { stdio: 'ignore' });
    let pid = 0;
    await waitFor(() => {
      pid = Number(readFileSync(`/proc/${launcher!.pid!}/task/${launcher!.pid!}/children`, 'utf8').trim().split(' ')[0] ?? 0);
      return pid > 0;
    }, 10_000, 'the server to start');
    pids.push(pid);
    ip('netns', 'del', NS.t);
    const taskNs = `/proc/${pid}/ns/net`;
    await waitListening(`/run/netns/${NS.a}`, TASK_IP, PORT);
    client = await startEchoClient(dir, `/run/netns/${NS.a}`, TASK_IP, PORT);
    await new Promise((r) => setTimeout(r, 300));

    addNetworkHold(taskNs);
    const img = join(dir, 'img');
    spawnSync('mkdir', ['-p', img]);
    const dump = criu(NS.a, ['dump', '-t', String(pid), '-D', img, '--tcp-established', '--network-lock', 'nftables', '-v4', '-o', 'dump.log']);
    expect(dump.status, readFileSync(join(img, 'dump.log'), 'utf8').split('\n').filter((l) => /Error/.test(l)).join('\n')).toBe(0);
    // The dump killed the task: its namespace, and the veth with it, may be gone already (the kernel tears it down
    // asynchronously), else it goes now.
    const del = spawnSync('ip', ['-n', NS.a, 'link', 'del', OUTER], { encoding: 'utf8', timeout: 10_000 });
    if (del.status !== 0 && !del.stderr.includes('Cannot find device')) throw new Error(`ip -n ${NS.a} link del ${OUTER}: ${del.stderr}`);

    const restore = criu(NS.b, ['restore', '-D', img, '--tcp-established', '-d', '--pidfile', join(img, 'pid'), '--external', `veth[eth0]:${OUTER}@brB`, '-v4', '-o', 'restore.log']);
    expect(restore.status, readFileSync(join(img, 'restore.log'), 'utf8').split('\n').filter((l) => /Error/.test(l)).join('\n')).toBe(0);
    const copy = Number(readFileSync(join(img, 'pid'), 'utf8'));
    pids.push(copy);
    const copyNs = `/proc/${copy}/ns/net`;

    // criu's unlock has run (the restore returned): the hold is there, criu's own lock is not.
    expect(isNetworkHeld(copyNs)).toBe(true);
    const tables = listNftTables(copyNs).map((t) => `${t.family} ${t.name}`).sort();
    expect(tables).toEqual(['arp ferry-hold', 'inet ferry-hold']);
    const log = readFileSync(join(img, 'restore.log'), 'utf8');
    console.log('restore log, network lines:', log.split('\n').filter((l) => /nft|lock|unlock|veth|ferry-hold/i.test(l)).slice(0, 12).join('\n'));
    expect(udpEchoes(`/run/netns/${NS.a}`, TASK_IP, PORT, 300)).toBe(false);
    await new Promise((r) => setTimeout(r, 500));

    expect(releaseNetworkHold(copyNs).sort()).toEqual(['arp ferry-hold', 'inet ferry-hold']);
    await new Promise((r) => setTimeout(r, 2_500));
    expect(udpEchoes(`/run/netns/${NS.a}`, TASK_IP, PORT)).toBe(true);
    const summary = await client.finish();
    console.log('echo client across the held dump/restore:', JSON.stringify(summary));
    expect(summary).toMatchObject({ error: null, lost: 0, duplicated: 0, localPort: client.localPort });
    expect(summary.answered).toBe(summary.sent);
  }, 120_000);
});
