/**
 * Two "hosts" on one machine for end-to-end tests: two network namespaces joined by a veth pair, with
 * addresses of our own, plus helpers that run the compiled `ferry` inside them (a dest agent in the dst host,
 * `ferry migrate` in the src host) and that look for what a migration may have left behind.
 *
 * Namespaces are entered with `nsenter --net=/run/netns/NAME`, never `ip netns exec`: the latter also makes a
 * private mount namespace, and CRIU then refuses to dump (notes/criu-lab.md §5).
 *
 * Isolation: the veth is created with both ends inside our namespaces (it never exists in the host's network
 * namespace), nothing is routed beyond them, so no test traffic can leave them.
 *
 * Mutual TLS, as in production: each pair of hosts gets its own CA (test-pki.ts) and a certificate per host
 * (spiffe://e2e.ferry.test/ferry/src|dst, with the host's address as IP SAN), in the test run's state dir; a
 * ferry started in a host finds its files through FERRY_TLS_DIR, and the dest agent allows only the src.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { WORK_DIR_MARKER } from '../dest-agent/work-dir.js';
import type { SerializedFerryError } from '../shared/errors/ferry-error.js';
import type { MigrationEvent, MigrationSummary } from '../source-agent/migration/events.js';
import type { Requirement } from './requirements.js';
import { createTestPki } from './test-pki.js';

const execFileAsync = promisify(execFile);

export const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const FERRY_BIN = join(REPO_ROOT, 'bin', 'ferry.js');
const DIST_MAIN = join(REPO_ROOT, 'dist', 'cli', 'main.js');
const NETNS_DIR = '/run/netns';
const NAME_PATTERN = /^ferry-t(\d+)-\d+-(src|dst)$/;
const POLL_MS = 25;

export interface Host {
  readonly role: 'src' | 'dst';
  /** Namespace name, as `ip netns list` shows it. */
  readonly name: string;
  /** /run/netns/NAME: what nsenter --net and startMemtest({ netns }) take. */
  readonly netns: string;
  /** This host's end of the veth. */
  readonly link: string;
  /** Its IPv4 address, without the prefix length. */
  readonly address: string;
  /** cert.pem, key.pem and ca.pem of this host: FERRY_TLS_DIR of every ferry started in it. */
  readonly tlsDir: string;
  /** Its certificate's identity, spiffe://e2e.ferry.test/ferry/src|dst (what --allow-peer names). */
  readonly identity: string;
}

export interface TwoHosts {
  readonly src: Host;
  readonly dst: Host;
  /** The n of 10.77.n.0/24. */
  readonly subnet: number;
  /** The command prefix that runs a program inside `host`'s network namespace. */
  enter(host: Host): string[];
  /** Shapes the src's egress (the page stream's direction) with tbf, e.g. shape('1gbit'). */
  shape(rate: string): Promise<void>;
  /** Deletes both namespaces (the veth goes with them). Idempotent. */
  destroy(): Promise<void>;
}

let created = 0;
const live = new Set<string>();
let stateDir: string | undefined;

const STATE_DIR_PREFIX = 'ferry-e2e-statedir-';

/**
 * One state dir per test process for the agents' own files. vitest's workers do not always run exit hooks,
 * so the dir carries the pid and every new one removes those of processes that are gone.
 */
function testStateDir(): string {
  if (stateDir) return stateDir;
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  for (const name of readdirSync(base)) {
    const pid = Number(/^ferry-e2e-statedir-(\d+)-/.exec(name)?.[1]);
    if (pid && !existsSync(`/proc/${pid}`)) rmSync(join(base, name), { recursive: true, force: true });
  }
  stateDir = makeTempDir(`${STATE_DIR_PREFIX}${process.pid}-`);
  return stateDir;
}

// Last resort for a run that ends without its afterAll (an exception in a hook, a worker shut down early).
process.once('exit', () => {
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  for (const name of live) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
});

async function ip(args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args, { timeout: 10_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim() ?? '';
    throw new Error(`ip ${args.join(' ')} failed: ${stderr || String(err)}`, { cause: err });
  }
}

function pidAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/** Namespaces of earlier runs whose test process is gone (killed before it could clean up). */
function sweepStale(): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return;
  }
  for (const name of names) {
    const m = NAME_PATTERN.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* another run swept it first */
    }
  }
}

async function deleteNetns(name: string): Promise<void> {
  if (!existsSync(join(NETNS_DIR, name))) {
    live.delete(name);
    return;
  }
  await ip(['netns', 'del', name]);
  live.delete(name);
}

/**
 * Creates the two hosts: ferry-t<pid>-<k>-src (10.77.n.1/24) and ferry-t<pid>-<k>-dst (10.77.n.2/24), lo up in
 * both. n comes from the pid, so that concurrent runs differ even in what they print (the namespaces are
 * separate anyway: the same address in two namespaces never clashes).
 */
export async function createTwoHosts(): Promise<TwoHosts> {
  sweepStale();
  const k = created++;
  const subnet = ((process.pid * 7 + k) % 250) + 1;
  const address = (role: 'src' | 'dst'): string => `10.77.${subnet}.${role === 'src' ? 1 : 2}`;
  const pki = await createTestPki(testStateDir(), 'e2e.ferry.test');
  const host = async (role: 'src' | 'dst'): Promise<Host> => {
    const name = `ferry-t${process.pid}-${k}-${role}`;
    const cert = await pki.issue(role, { ipAddresses: [address(role)] });
    return {
      role,
      name,
      netns: join(NETNS_DIR, name),
      link: `fy${process.pid}x${k}${role[0]}`,
      address: address(role),
      tlsDir: join(cert.certFile, '..'),
      identity: cert.identity!,
    };
  };
  let src: Host, dst: Host;
  try {
    [src, dst] = [await host('src'), await host('dst')];
    for (const h of [src, dst]) {
      if (h.link.length > 15) throw new Error(`link name ${h.link} is longer than 15 characters`);
    }
  } catch (err) {
    pki.remove();
    throw err;
  }

  let destroyed: Promise<void> | undefined;
  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      const errors: unknown[] = [];
      for (const h of [src, dst]) await deleteNetns(h.name).catch((e: unknown) => errors.push(e));
      pki.remove();
      if (errors.length > 0) throw errors[0];
    })();
    return destroyed;
  };

  try {
    for (const h of [src, dst]) {
      await ip(['netns', 'add', h.name]);
      live.add(h.name);
    }
    // Both ends are born inside their namespaces: the pair never appears in the host's network namespace.
    await ip(['link', 'add', src.link, 'netns', src.name, 'type', 'veth', 'peer', 'name', dst.link, 'netns', dst.name]);
    for (const h of [src, dst]) {
      await ip(['-n', h.name, 'addr', 'add', `${h.address}/24`, 'dev', h.link]);
      await ip(['-n', h.name, 'link', 'set', 'lo', 'up']);
      await ip(['-n', h.name, 'link', 'set', h.link, 'up']);
    }
  } catch (err) {
    await destroy().catch(() => undefined);
    throw err;
  }

  const enter = (h: Host): string[] => ['nsenter', `--net=${h.netns}`];
  return {
    src,
    dst,
    subnet,
    enter,
    shape: async (rate) => {
      await execFileAsync(
        enter(src)[0]!,
        [...enter(src).slice(1), 'tc', 'qdisc', 'replace', 'dev', src.link, 'root', 'tbf', 'rate', rate, 'burst', '1mb', 'latency', '50ms'],
        { timeout: 10_000 },
      );
    },
    destroy,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Running ferry

export interface FerryRunOptions {
  /** Run inside this host's network namespace. */
  host?: Host;
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string>;
  /** SIGTERM (ferry rolls back) after this long, SIGKILL 10 s later. Default 60 s; 0 = no limit. */
  timeoutMs?: number;
}

/** A line of `ferry ... --json` stdout: an event, the summary, the error, or text that was not JSON. */
export type FerryLine =
  | MigrationEvent
  | { kind: 'summary'; summary: MigrationSummary }
  | { kind: 'error'; error: SerializedFerryError }
  /** JSON without a kind, e.g. the dest agent's {"event":"listening",...}. */
  | { kind: 'other'; value: Record<string, unknown> }
  | { kind: 'text'; text: string };

export interface FerryResult {
  /** The exit code, or null when it ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  lines: FerryLine[];
  summary: MigrationSummary | undefined;
  error: SerializedFerryError | undefined;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface FerryRun {
  readonly child: ChildProcess;
  /** Lines seen so far. */
  readonly lines: readonly FerryLine[];
  /** stderr so far (a ferry process logs JSON lines there). */
  stderr(): string;
  /** Resolves with the first line (seen so far or later) that matches; rejects on timeout or if ferry exits first. */
  waitForLine(match: (line: FerryLine) => boolean, timeoutMs: number): Promise<FerryLine>;
  readonly done: Promise<FerryResult>;
}

/** Starts `node bin/ferry.js ARGS` (inside a host's network namespace when given). */
export function startFerry(args: string[], opts: FerryRunOptions = {}): FerryRun {
  const argv = [...(opts.host ? ['nsenter', `--net=${opts.host.netns}`] : []), process.execPath, FERRY_BIN, ...args];
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: REPO_ROOT,
    // The CLI is silent by default; its log (on stderr) is what explains a failed expectation.
    // FERRY_STATE_DIR: the source's learned cost model stays in this test run, not in /var/lib/ferry.
    // FERRY_TLS_DIR: the host's own certificate, as /etc/ferry/tls would hold it.
    env: {
      ...process.env,
      FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? 'info',
      FERRY_STATE_DIR: testStateDir(),
      ...(opts.host ? { FERRY_TLS_DIR: opts.host.tlsDir } : {}),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: FerryLine[] = [];
  let stdout = '';
  let stderr = '';
  let partial = '';
  let ended = false;
  const waiters = new Set<() => void>();
  const wakeAll = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (text.trim() === '') continue;
      lines.push(parseLine(text));
    }
    wakeAll();
  });
  child.stderr.on('data', (chunk: string) => (stderr += chunk));

  let timedOut = false;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let killTimer: NodeJS.Timeout | undefined;
  const termTimer =
    timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGTERM');
          killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        }, timeoutMs)
      : undefined;

  const done = new Promise<FerryResult>((resolve) => {
    child.once('error', (err) => {
      stderr += `\nspawn error: ${err.message}`;
    });
    child.once('close', (code, signal) => {
      clearTimeout(termTimer);
      clearTimeout(killTimer);
      if (partial.trim() !== '') lines.push(parseLine(partial));
      ended = true;
      wakeAll();
      const summary = lines.find((l): l is Extract<FerryLine, { kind: 'summary' }> => l.kind === 'summary')?.summary;
      const error = lines.find((l): l is Extract<FerryLine, { kind: 'error' }> => l.kind === 'error')?.error;
      resolve({ exitCode: code, signal, timedOut, lines, summary, error, stdout, stderr, durationMs: Date.now() - started });
    });
  });

  const waitForLine = (match: (line: FerryLine) => boolean, timeout: number): Promise<FerryLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = lines.find(match);
        if (hit) finish(() => resolve(hit));
        else if (ended) finish(() => reject(new Error(`ferry ${args[0]} exited before the awaited line; stdout:\n${stdout}\nstderr tail:\n${tail(stderr)}`)));
      };
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out after ${timeout} ms waiting for a line of ferry ${args[0]}; stdout so far:\n${stdout}`))),
        timeout,
      );
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        settle();
      };
      waiters.add(check);
      check();
    });

  return { child, lines, stderr: () => stderr, waitForLine, done };
}

export function runFerry(args: string[], opts: FerryRunOptions = {}): Promise<FerryResult> {
  return startFerry(args, opts).done;
}

function parseLine(text: string): FerryLine {
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return typeof (v as { kind?: unknown }).kind === 'string' ? (v as FerryLine) : { kind: 'other', value: v as Record<string, unknown> };
    }
  } catch {
    /* not JSON */
  }
  return { kind: 'text', text };
}

/** The last lines of a log, for failure messages. */
export function tail(text: string, n = 25): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** `FERRY-NNNN` of the first `ferry: FERRY-NNNN: ...` line a command printed on stderr (commands without --json). */
export function errorCodeIn(stderr: string): string | undefined {
  return /^ferry: (FERRY-\d{4}):/m.exec(stderr)?.[1];
}

export interface MigrateOptions extends Omit<FerryRunOptions, 'host'> {
  /** HOST:PORT; default the dest agent's address. */
  to?: string;
  /** More flags for `ferry migrate`. */
  args?: string[];
}

/** `ferry migrate PID --to ... --json` inside the src host. */
export function startMigrate(hosts: TwoHosts, pid: number | string, dest: DestAgentHandle | undefined, opts: MigrateOptions = {}): FerryRun {
  const to = opts.to ?? dest?.address;
  if (to === undefined) throw new Error('startMigrate needs a dest agent or opts.to');
  return startFerry(['migrate', String(pid), '--to', to, '--json', ...(opts.args ?? [])], { ...opts, host: hosts.src });
}

export function runMigrate(hosts: TwoHosts, pid: number | string, dest: DestAgentHandle | undefined, opts: MigrateOptions = {}): Promise<FerryResult> {
  return startMigrate(hosts, pid, dest, opts).done;
}

/** One line for a failed expectation: exit code, error and the tail of the log. */
export function describeResult(r: FerryResult): string {
  return [
    `exit ${r.exitCode}${r.signal ? ` (signal ${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''} after ${r.durationMs} ms`,
    r.error ? `error: ${JSON.stringify(r.error)}` : 'no error line',
    `stderr tail:\n${tail(r.stderr)}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// The dest agent

export interface DestAgentOptions {
  /** Default: a fresh temp dir, removed by stop(). */
  workDir?: string;
  env?: Record<string, string>;
  /** Also serve /metrics on the dst address (port picked by the agent). */
  metrics?: boolean;
  /** The sources it accepts (--allow-peer); default the src host's identity. */
  allowPeers?: string[];
  startTimeoutMs?: number;
}

export interface DestAgentHandle {
  readonly pid: number;
  readonly host: Host;
  readonly port: number;
  /** HOST:PORT for --to. */
  readonly address: string;
  readonly metricsPort: number | undefined;
  readonly workDir: string;
  /** Everything the agent wrote on stderr so far (its JSON log). */
  stderr(): string;
  exited(): boolean;
  /** Session dirs (and anything else besides logs/) in the work dir. */
  leftovers(): string[];
  /** Sends the signal and waits until the agent is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM (the agent aborts open sessions), SIGKILL after 10 s; removes a work dir it created. Idempotent. */
  stop(): Promise<void>;
}

/** `ferry dest-agent --listen DST:0 --allow-peer SRC-ID` inside the dst host (mutual TLS); resolves once it listens. */
export async function startDestAgent(hosts: TwoHosts, opts: DestAgentOptions = {}): Promise<DestAgentHandle> {
  const ownWorkDir = opts.workDir === undefined;
  const workDir = opts.workDir ?? makeTempDir('ferry-e2e-dest-');
  const dst = hosts.dst;
  const args = ['dest-agent', '--listen', `${dst.address}:0`, '--work-dir', workDir];
  for (const peer of opts.allowPeers ?? [hosts.src.identity]) args.push('--allow-peer', peer);
  if (opts.metrics) args.push('--metrics', `${dst.address}:0`);
  // A daemon: no time limit; stop() (afterAll) ends it.
  const run = startFerry(args, { host: dst, env: opts.env, timeoutMs: 0 });
  let exited = false;
  void run.done.then(() => (exited = true));

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (!exited) run.child.kill(signal);
    await run.done;
  };
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        run.child.kill('SIGTERM');
        const timer = setTimeout(() => run.child.kill('SIGKILL'), 10_000);
        await run.done;
        clearTimeout(timer);
      }
      if (ownWorkDir) rmSync(workDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  let listening: Record<string, unknown>;
  try {
    const line = await run.waitForLine((l) => l.kind === 'other' && l.value.event === 'listening', opts.startTimeoutMs ?? 20_000);
    listening = (line as Extract<FerryLine, { kind: 'other' }>).value;
  } catch (err) {
    await stop();
    const r = await run.done;
    throw new Error(`the dest agent did not start: ${(err as Error).message}\n${tail(r.stderr)}`, { cause: err });
  }
  if (typeof listening.port !== 'number') {
    await stop();
    throw new Error(`the dest agent printed no port: ${JSON.stringify(listening)}`);
  }
  const port = listening.port;
  return {
    pid: run.child.pid!,
    host: dst,
    port,
    address: `${dst.address}:${port}`,
    metricsPort: typeof listening.metricsPort === 'number' ? listening.metricsPort : undefined,
    workDir,
    stderr: () => run.stderr(),
    exited: () => exited,
    leftovers: () => leftovers(workDir),
    kill,
    stop,
  };
}

/** GET of an http:// URL from inside a host's network namespace (the test process lives outside them). */
export async function httpGetIn(host: Host, url: string, timeoutMs = 10_000): Promise<string> {
  const script = 'fetch(process.argv[1]).then(async (r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); process.stdout.write(await r.text()); })';
  const { stdout } = await execFileAsync('nsenter', [`--net=${host.netns}`, process.execPath, '-e', script, url], {
    timeout: timeoutMs,
    maxBuffer: 16 << 20,
  });
  return stdout;
}

/** The value of one sample of a Prometheus text exposition, e.g. metricValue(text, 'x_total{result="ok"}'). */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// What a test checks for afterwards

/**
 * Entries of dir other than logs/ and the work dir's marker (a migration's session dir on the dest, its images
 * dir on the source), and every journal in journal/ whose session has not ended (named `journal/ID: STATE`).
 */
export function leftovers(dir: string): string[] {
  try {
    const open = existsSync(join(dir, 'journal'))
      ? readdirSync(join(dir, 'journal')).flatMap((f) => {
          const last = readFileSync(join(dir, 'journal', f), 'utf8').trimEnd().split('\n').at(-1) ?? '';
          const state = (JSON.parse(last || '{}') as { state?: string }).state;
          return state === 'committed' || state === 'aborted' ? [] : [`journal/${f}: ${state}`];
        })
      : [];
    return [...readdirSync(dir).filter((e) => e !== 'logs' && e !== 'journal' && e !== WORK_DIR_MARKER), ...open];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** A temp dir on tmpfs when there is one (images, page stores: RAM-speed like the defaults). */
export function makeTempDir(prefix: string): string {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return mkdtempSync(join(base, prefix));
}

/** Inode of a namespace file (/proc/PID/ns/net, /run/netns/NAME): equal inodes are the same namespace. */
export function nsInode(path: string): number {
  return statSync(path).ino;
}

/** Host pids of live (non-zombie) processes running `program` (the basename of argv[0]) whose argv contains
 * `flag value` as two consecutive words. The program matters: a launcher (unshare, nsenter) carries the same words. */
export function pidsWithArgs(program: string, flag: string, value: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf(flag);
      if (basename(argv[0] ?? '') === program && i >= 0 && argv[i + 1] === value) found.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

/** Polls until cond() holds; throws naming `what` after timeoutMs. */
export async function eventually(cond: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Requirements

let criuProbe: Requirement | undefined;

/** A usable CRIU, found the way Ferry finds it (scripts/provision-criu.sh, which honours FERRY_CRIU). The
 * first run on a fresh host provisions it (a download of ~8 MB); later runs only re-check. */
export function hasCriu(): Requirement {
  criuProbe ??= (() => {
    try {
      const out = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'provision-criu.sh')], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 10 * 60_000,
      });
      const path = out.trim().split('\n').at(-1) ?? '';
      return { ok: path.startsWith('/'), reason: `needs CRIU >= 4.2 (scripts/provision-criu.sh printed "${path}")` };
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').slice(-2).join(' | ') ?? String(err);
      return { ok: false, reason: `needs CRIU >= 4.2 (scripts/provision-criu.sh failed: ${stderr})` };
    }
  })();
  return criuProbe;
}

/** Throws a clear error when the CLI is not compiled (the e2e tests run bin/ferry.js, which runs dist/). */
export function requireBuilt(): void {
  if (!existsSync(DIST_MAIN)) {
    throw new Error(`${DIST_MAIN} is missing: run \`npm run build\` first (npm test does it) — the e2e tests run the compiled CLI`);
  }
}
