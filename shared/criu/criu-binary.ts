/**
 * Finding and probing the CRIU binary. `scripts/provision-criu.sh` decides which criu Ferry uses (FERRY_CRIU,
 * the system's criu >= 4.2, or a private Debian build that `ferry setup` provisions) and prints its path on its
 * last stdout line; this module runs it (to find: once per process, cached; to provision: `ferry setup`).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FerryError } from '../errors/ferry-error.js';
import type { Side } from '../phases.js';

const execFileP = promisify(execFile);

export const MIN_CRIU_VERSION = { major: 4, minor: 2 } as const;
/** The first provisioning (`ferry setup`) downloads about 8 MB of debs; a slow mirror has taken 45 s. */
const PROVISION_TIMEOUT_MS = 10 * 60_000;
const QUICK_TIMEOUT_MS = 30_000;

export interface CriuVersion {
  major: number;
  minor: number;
  patch: number;
  /** As printed, e.g. "4.2.1". */
  text: string;
}

export type CriuProbe = { ok: true; path: string; version: string } | { ok: false; reason: string };

/**
 * The repository root: the nearest directory at or above `start` whose package.json is named "ferry".
 * Works from the sources (shared/criu/) and from the compiled tree (dist/shared/criu/).
 */
export function findRepoRoot(start: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'ferry') return dir;
      } catch {
        /* not ours: keep looking upward */
      }
    }
    if (dirname(dir) === dir) throw new Error(`no package.json named "ferry" at or above ${start}`);
  }
}

const located = new Map<string, Promise<string>>();

/**
 * The config file's [criu] path, below FERRY_CRIU. Process-wide like the variable it stands under: every
 * caller of locateCriu (restore, preflight, the metrics' build info, `ferry check`) must run the same criu,
 * and threading one path through all of them would change a dozen signatures for one setting. The command
 * that read the file sets it once, at start.
 */
let configuredCriu: string | undefined;

export function useConfiguredCriu(path: string | undefined): void {
  configuredCriu = path === '' ? undefined : path;
}

/** The criu the operator chose, if any: FERRY_CRIU, else the config file's; undefined = provision one. */
export function chosenCriu(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.FERRY_CRIU || configuredCriu;
}

export interface LocateCriuOptions {
  /** Which side asks: chooses SOURCE_NO_CRIU or DEST_NO_CRIU for the error. */
  side?: Side;
  signal?: AbortSignal;
}

/**
 * The path of the criu binary to use, from `scripts/provision-criu.sh --find-only` (which honours FERRY_CRIU,
 * here also the config file's [criu] path below it): never a download, so that a migration or `ferry --version`
 * does not fetch packages as root (`ferry setup` does). Cached per process and per chosen path; a failure is
 * not cached, so a later call retries.
 */
export function locateCriu(opts: LocateCriuOptions = {}): Promise<string> {
  const chosen = chosenCriu();
  const key = chosen ?? '';
  let p = located.get(key);
  if (!p) {
    p = runProvision('find', chosen, opts.signal);
    located.set(key, p);
    p.catch(() => located.delete(key));
  }
  return p.catch((e: unknown) => {
    throw new FerryError(opts.side === 'dest' ? 'DEST_NO_CRIU' : 'SOURCE_NO_CRIU', {
      side: opts.side,
      phase: 'negotiate',
      detail: e instanceof Error ? e.message : String(e),
      cause: e,
    });
  });
}

/** `locateCriu` for one side: throws SOURCE_NO_CRIU or DEST_NO_CRIU when there is no usable criu. */
export function requireCriu(side: Side, opts: { signal?: AbortSignal } = {}): Promise<string> {
  return locateCriu({ ...opts, side });
}

/**
 * Provisions CRIU when none is usable here (the download of scripts/provision-criu.sh, cached in
 * FERRY_CACHE_DIR) and returns its path: `ferry setup` only. Everything else finds CRIU with `locateCriu`,
 * which never downloads. `progress` gets the script's stderr lines as they come (what it fetches).
 */
export async function provisionCriu(opts: { signal?: AbortSignal; progress?: (line: string) => void } = {}): Promise<string> {
  const chosen = chosenCriu();
  const path = await runProvision('provision', chosen, opts.signal, opts.progress);
  located.set(chosen ?? '', Promise.resolve(path));
  return path;
}

function runProvision(mode: 'find' | 'provision', chosen: string | undefined, signal?: AbortSignal, progress?: (line: string) => void): Promise<string> {
  const script = join(findRepoRoot(), 'scripts', 'provision-criu.sh');
  const args = mode === 'find' ? [script, '--find-only'] : [script];
  return new Promise<string>((resolve, reject) => {
    // A chosen criu goes to the script as FERRY_CRIU in its environment only: this process's stays as it was.
    const env = chosen === undefined ? process.env : { ...process.env, FERRY_CRIU: chosen };
    const child = spawn('bash', args, { signal, env, timeout: mode === 'find' ? QUICK_TIMEOUT_MS : PROVISION_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    const said: string[] = [];
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-4096)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      said.push(line);
      if (said.length > 3) said.shift();
      progress?.(line);
    });
    child.on('error', (e) => reject(new Error(`${script} failed: ${e.message}`, { cause: e })));
    child.on('close', (code, sig) => {
      if (code !== 0) return reject(new Error(`${script} failed: ${said.join(' | ') || `exit ${code ?? sig}`}`));
      const path = stdout.trim().split('\n').at(-1)?.trim() ?? '';
      if (!path.startsWith('/')) return reject(new Error(`${script} printed no absolute criu path (last line: "${path}")`));
      resolve(path);
    });
  });
}

/** Parses the `Version: 4.2.1` line of `criu --version`. */
export function parseCriuVersion(output: string): CriuVersion | undefined {
  const m = /^Version:\s*(\d+)\.(\d+)(?:\.(\d+))?\s*$/m.exec(output);
  if (!m) return undefined;
  const [, major = '0', minor = '0', patch] = m;
  return { major: Number(major), minor: Number(minor), patch: Number(patch ?? 0), text: patch === undefined ? `${major}.${minor}` : `${major}.${minor}.${patch}` };
}

/** The version of the criu at `path` (its `text` is e.g. "4.2.1"). */
export async function criuVersion(path: string, opts: { signal?: AbortSignal } = {}): Promise<CriuVersion> {
  const { stdout } = await execFileP(path, ['--version'], { signal: opts.signal, timeout: QUICK_TIMEOUT_MS });
  const v = parseCriuVersion(stdout);
  if (!v) throw new Error(`${path} --version printed no "Version:" line: ${stdout.trim().slice(0, 200)}`);
  return v;
}

export function versionAtLeast(v: CriuVersion, min: { major: number; minor: number }): boolean {
  return v.major > min.major || (v.major === min.major && v.minor >= min.minor);
}

/**
 * Is there a CRIU Ferry can use here? Finds it (or takes `criu`), checks its version and runs `criu check`.
 * Never throws: the reason is for `ferry check` and for negotiation.
 */
export async function probeCriu(opts: { criu?: string; signal?: AbortSignal } = {}): Promise<CriuProbe> {
  let path = opts.criu;
  try {
    path ??= await locateCriu({ signal: opts.signal });
  } catch (e) {
    return { ok: false, reason: `no usable criu: ${e instanceof FerryError ? (e.detail ?? e.message) : String(e)}` };
  }
  let version: CriuVersion;
  try {
    version = await criuVersion(path, opts);
  } catch (e) {
    return { ok: false, reason: `${path} does not run: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!versionAtLeast(version, MIN_CRIU_VERSION)) {
    return { ok: false, reason: `${path} is criu ${version.text}; Ferry needs >= ${MIN_CRIU_VERSION.major}.${MIN_CRIU_VERSION.minor}` };
  }
  try {
    await execFileP(path, ['check'], { signal: opts.signal, timeout: QUICK_TIMEOUT_MS });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message?: string };
    const said = `${err.stderr ?? ''}\n${err.stdout ?? ''}`
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/RLIMIT_NOFILE/.test(l));
    return { ok: false, reason: `\`${path} check\` failed: ${said.slice(-3).join(' | ') || err.message || String(e)}` };
  }
  return { ok: true, path, version: version.text };
}
