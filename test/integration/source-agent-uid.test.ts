/**
 * The source agent driven by an unprivileged user, with a real uid switch: the agent (root, in this process)
 * on a socket of a test group; the `ferry` CLI run as uid 65534 (setpriv) with or without that group. The
 * attack of issue 9: such a caller asked the agent to migrate a root process to a dest of its own. Now it is
 * refused before anything is touched, while its own processes get past authorization.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStat } from '../../shared/kernel/proc-status.js';
import { waitGone } from '../../shared/kernel/process-wait.js';
import { repoRoot } from '../../shared/repo-root.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { startSourceAgent, type SourceAgent } from '../../source-agent/source-agent.js';
import { createTestPki } from '../../testbed/test-pki.js';
import { compileTransportSecurity } from '../../shared/transport/transport-security.js';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';

const NOBODY = 65534;
const ROOT = repoRoot();

function hasUid(uid: number): Requirement {
  let ok = true;
  try {
    execFileSync('getent', ['passwd', String(uid)], { stdio: 'ignore' });
  } catch {
    ok = false;
  }
  return { ok, reason: `needs a user with uid ${uid}` };
}

const runnable = canRun(
  'source agent under another uid',
  isRoot(),
  hasCommand('setpriv'),
  hasCommand('groupadd'),
  hasCommand('groupdel'),
  hasCommand('getent'),
  hasUid(NOBODY),
);

let dir = '';
let group = '';
let gid = 0;
let agent: SourceAgent | undefined;
let dest: Server | undefined;
let destAddress = '';
let destConnections = 0;
/** A second "dest", not on the allow-list. */
let other: Server | undefined;
let otherAddress = '';
let otherConnections = 0;
const tasks: ChildProcess[] = [];

beforeAll(async () => {
  if (!runnable) return;
  group = `ferryt${process.pid}`;
  execFileSync('groupadd', [group], { stdio: 'ignore' });
  gid = Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]);
  dir = mkdtempSync(join(tmpdir(), 'ferry-uid-'));
  chmodSync(dir, 0o755); // other uids must reach the socket; the socket's own mode decides who connects
  mkdirSync(join(dir, 'home'));
  chownSync(join(dir, 'home'), NOBODY, NOBODY);
  [dest, destAddress] = await countingListener(() => destConnections++);
  [other, otherAddress] = await countingListener(() => otherConnections++);
  // The agent dials dests over mutual TLS: give it a certificate of its own.
  const pki = await createTestPki(dir);
  const cert = await pki.issue('source');
  const dialSecurity = compileTransportSecurity({ certFile: cert.certFile, keyFile: cert.keyFile, caFile: cert.caFile }, ['client']);
  agent = await startSourceAgent({ socket: join(dir, 'source.sock'), socketGid: gid, allowDests: [destAddress], dialSecurity, journalDir: join(dir, 'journal'), log: silentLogger });
});

afterAll(async () => {
  await agent?.close();
  for (const server of [dest, other]) await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  const pids = tasks.map((t) => t.pid!).filter((p) => p > 0);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await waitGone(pids, 5_000);
  if (group) execFileSync('groupdel', [group], { stdio: 'ignore' });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A TCP listener on loopback that only counts connections: a refusal can be shown to have called nothing. */
async function countingListener(onConnection: () => void): Promise<[Server, string]> {
  const server = createServer((s) => {
    onConnection();
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return [server, `127.0.0.1:${(server.address() as { port: number }).port}`];
}

/** A sleeping task, its own session leader (as migrations need), as root or as uid 65534. */
function startTask(asNobody: boolean): number {
  const argv = asNobody ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'sleep', '600'] : ['sleep', '600'];
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: 'ignore' });
  tasks.push(child);
  return child.pid!;
}

/** uids and start time: what "untouched" compares. */
function taskState(pid: number): { state: string | undefined; startTime: number | undefined; uid: string | undefined } {
  const stat = readStat(pid);
  const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { state: stat?.state, startTime: stat?.startTime, uid };
}

interface CliResult {
  code: number | null;
  error: { code: string; key: string } | undefined;
  stdout: string;
  stderr: string;
}

/** Runs argv as uid 65534, with the test group (`withGroup`) or no supplementary group at all. */
function asNobody(withGroup: boolean, argv: string[], entry = [join(ROOT, 'node_modules', '.bin', 'vite-node'), join(ROOT, 'test', 'support', 'ferry-cli.ts')]): Promise<CliResult> {
  const ids = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, withGroup ? `--groups=${gid}` : '--clear-groups'];
  const child = spawn('setpriv', [...ids, '--', ...entry, ...argv], {
    cwd: ROOT,
    env: { ...process.env, HOME: join(dir, 'home'), FERRY_LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const lines = stdout.split('\n').filter((l) => l.startsWith('{'));
      const error = lines.map((l) => JSON.parse(l) as { kind?: string; error?: { code: string; key: string } }).find((l) => l.kind === 'error')?.error;
      done({ code, error, stdout, stderr });
    });
  });
}

describe.skipIf(!runnable)('source agent under another uid', () => {
  it('refuses a caller of the group that asks to migrate a root process: the process untouched, no dest called', async () => {
    const pid = startTask(false);
    await settle(pid);
    const before = taskState(pid);
    expect(before.uid).toBe('0');
    const r = await asNobody(true, ['migrate', String(pid), '--to', destAddress, '--via', agent!.socket, '--json']);
    expect(r, r.stderr).toMatchObject({ code: 2, error: { code: 'FERRY-0024', key: 'CALLER_NOT_PERMITTED' } });
    const after = taskState(pid);
    expect({ startTime: after.startTime, uid: after.uid }).toEqual({ startTime: before.startTime, uid: '0' });
    expect(['R', 'S']).toContain(after.state); // alive, neither stopped nor a zombie
    expect(destConnections).toBe(0);
  });

  it('lets the same caller past authorization for a process of its own', async () => {
    const pid = startTask(true);
    await settle(pid);
    expect(taskState(pid).uid).toBe(String(NOBODY));
    const r = await asNobody(true, ['migrate', String(pid), '--to', destAddress, '--via', agent!.socket, '--json']);
    // It fails later (the "dest" speaks no gRPC); only the authorization outcome is asserted.
    expect(r.error?.key, r.stderr).toBeDefined();
    expect(['CALLER_NOT_PERMITTED', 'DEST_NOT_ALLOWED', 'SOURCE_AGENT_ACCESS_DENIED', 'SOURCE_AGENT_UNREACHABLE']).not.toContain(r.error!.key);
    // Without a usable CRIU the migration stops before it dials; otherwise it reached the dest.
    if (r.error!.key !== 'SOURCE_NO_CRIU') expect(destConnections).toBeGreaterThan(0);
    expect(['R', 'S']).toContain(taskState(pid).state);
    console.log(`own process: past authorization, then ${r.error!.key} (${r.error!.code}); dest connections ${destConnections}`);
  });

  it('refuses the same caller a dest that is not on the allow-list', async () => {
    const pid = startTask(true);
    await settle(pid);
    const r = await asNobody(true, ['migrate', String(pid), '--to', otherAddress, '--via', agent!.socket, '--json']);
    expect(r, r.stderr).toMatchObject({ code: 2, error: { code: 'FERRY-0025', key: 'DEST_NOT_ALLOWED' } });
    expect(otherConnections).toBe(0);
    expect(['R', 'S']).toContain(taskState(pid).state);
  });

  it('does not let a caller outside the group connect at all (the kernel refuses, the CLI says so)', async () => {
    const r = await asNobody(false, ['migrate', '1', '--to', destAddress, '--via', agent!.socket, '--json']);
    expect(r, r.stderr).toMatchObject({ code: 2, error: { code: 'FERRY-0023', key: 'SOURCE_AGENT_ACCESS_DENIED' } });
    // Not only the CLI's check: connect(2) itself fails for this caller.
    const script = `require('net').connect(process.argv[1]).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => console.log(e.code))`;
    const raw = await asNobody(false, [agent!.socket], [process.execPath, '-e', script]);
    expect(raw.stdout.trim(), raw.stderr).toBe('EACCES');
  });
});

/** Waits (bounded) until the spawned task has exec'd its final program. */
async function settle(pid: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (readStat(pid)?.comm === 'sleep') return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`task ${pid} did not start sleep within 2 s`);
}
