/**
 * End to end, as an operator installs Ferry on a host without a checkout: `npm pack` (its prepack builds dist/),
 * `npm install -g --prefix SCRATCH` of the tarball (npm's install step builds the native addon and the pager,
 * finding Node's headers without the ~/.npmrc nodedir a checkout has), then from SCRATCH only: `ferry
 * --version`, `ferry setup`, `ferry install-service` under a scratch root (dry run, real, again, refused
 * over an edit), `systemd-analyze verify` of the written units, and a real dest agent started from the
 * installed package: its listening line, its /metrics, a clean stop on SIGTERM. Everything lives in one temp
 * dir, removed at the end. About 30 s here, most of it npm (measured times are printed).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';

const execFileP = promisify(execFile);
const runnable = canRun(
  'e2e installed package',
  isRoot(),
  hasCommand('npm'),
  hasCommand('gcc'),
  hasCommand('make'),
  hasCommand('python3'),
  { ok: existsSync('/usr/include/xxhash.h'), reason: 'needs libxxhash-dev (the native addon links it)' },
);
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** The registry answers with what npm needs that `npm ci` did not cache (full packuments); offline, this skips. */
const NPM_UNREACHABLE = /ENOTCACHED|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET/;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { cwd: opts.cwd ?? '/', env: opts.env, timeout: opts.timeoutMs, maxBuffer: 16 << 20, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: `${err.stderr ?? ''}\n${err.message}` };
  }
}

describe.skipIf(!runnable)('the packed tarball, installed into a scratch prefix', () => {
  const dir = runnable ? makeTempDir('ferry-install-') : '';
  const prefix = join(dir, 'prefix');
  const ferry = join(prefix, 'bin', 'ferry');
  const pkg = join(prefix, 'lib', 'node_modules', 'ferry');
  const root = join(dir, 'root');
  let agent: ChildProcess | undefined;

  afterAll(() => {
    if (agent && agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('packs, installs offline from the npm cache, and runs from the prefix alone', { timeout: 420_000 }, async (ctx) => {
    // 1. npm pack: prepack builds dist/; the tarball holds what the product runs and nothing of the tests.
    let t = Date.now();
    const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: REPO_ROOT, timeoutMs: 180_000 });
    expect(packed.code, packed.stderr).toBe(0);
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; size: number; files: { path: string }[] }[];
    const files = new Set(info!.files.map((f) => f.path));
    for (const f of ['bin/ferry.js', 'dist/cli/main.js', 'dist/shared/criu/tcp-dump-undo-main.js', 'proto/ferry/v1/ferry.proto', 'binding.gyp', 'shared/native/addon/ferry_native.c', 'native/pager/ferry-pager.c', 'scripts/build-native.mjs', 'scripts/provision-criu.sh', 'scripts/private-apt.sh', 'deploy/systemd/ferry-dest-agent.service', 'deploy/systemd/ferry-source-agent.service', 'deploy/systemd/ferry.env', 'docs/operations.md']) {
      expect(files.has(f), `${f} in the tarball`).toBe(true);
    }
    expect([...files].filter((f) => /^(test|testbed|bench|build|node_modules|dist\/test)\//.test(f))).toEqual([]);
    expect(info!.size).toBeLessThan(1 << 20);
    console.log(`npm pack: ${info!.filename}, ${info!.size} bytes, ${files.size} files, ${Date.now() - t} ms`);

    // 2. npm install -g into the scratch prefix, from outside the checkout, with a user config without the
    // checkout's nodedir=/usr: the package's own install step must find Node's headers.
    const npmrc = join(dir, 'npmrc');
    const userRc = join(homedir(), '.npmrc');
    writeFileSync(npmrc, existsSync(userRc) ? readFileSync(userRc, 'utf8').replace(/^\s*nodedir\s*=.*$/gm, '') : '');
    const env: NodeJS.ProcessEnv = { ...process.env, npm_config_userconfig: npmrc };
    delete env.npm_config_nodedir;
    t = Date.now();
    const installed = await run(
      'npm',
      ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--allow-scripts=ferry,koffi,protobufjs', join(dir, info!.filename)],
      { cwd: dir, env, timeoutMs: 300_000 },
    );
    if (installed.code !== 0 && NPM_UNREACHABLE.test(installed.stderr)) {
      console.warn(`SKIP e2e installed package: npm could not reach the registry for what its cache lacks: ${installed.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      ctx.skip();
    }
    expect(installed.code, installed.stderr).toBe(0);
    console.log(`npm install -g --prefer-offline: ${Date.now() - t} ms`);
    expect(statSync(join(pkg, 'build', 'Release', 'ferry_native.node')).isFile()).toBe(true);
    expect(statSync(join(pkg, 'build', 'Release', 'ferry_pager')).mode & 0o111).not.toBe(0);
    if (existsSync('/usr/include/node/node_api.h') && realpathSync(process.execPath).startsWith('/usr/bin/')) {
      expect(readFileSync(join(pkg, 'build', 'config.gypi'), 'utf8')).toMatch(/"nodedir": "\/usr"/);
    }

    // 3. The installed command, run from / with the checkout nowhere on its paths.
    const version = await run(ferry, ['--version'], { timeoutMs: 60_000 });
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(new RegExp(`^ferry ${VERSION.replaceAll('.', '\\.')}\\n`));
    expect(version.stdout).toMatch(/^criu (\d+\.\d+\S* \(\/|none: )/m);
    t = Date.now();
    const setup = await run(ferry, ['setup'], { timeoutMs: 180_000 });
    console.log(`ferry setup (exit ${setup.code}, ${Date.now() - t} ms):\n${setup.stdout}`);
    expect(setup.stdout).toMatch(/^native addon {2}ok$/m);
    expect(setup.stdout).toMatch(/^criu {10}\d+\.\d+/m);

    // 4. install-service under a scratch root: a dry run writes nothing; then the units, the env file, the dirs.
    const dry = await run(ferry, ['install-service', '--role', 'both', '--root', root, '--dry-run'], { timeoutMs: 30_000 });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^would write .*ferry-dest-agent\.service/m);
    expect(existsSync(root)).toBe(false);
    const real = await run(ferry, ['install-service', '--role', 'both', '--root', root], { timeoutMs: 30_000 });
    expect(real.code, real.stderr).toBe(0);
    const destUnit = join(root, 'etc/systemd/system/ferry-dest-agent.service');
    const sourceUnit = join(root, 'etc/systemd/system/ferry-source-agent.service');
    const realPkg = realpathSync(pkg);
    expect(readFileSync(destUnit, 'utf8')).toContain(`\nExecStart=${realpathSync(process.execPath)} ${realPkg}/bin/ferry.js dest-agent --config /etc/ferry/ferry.toml\n`);
    expect(readFileSync(sourceUnit, 'utf8')).toContain(`\nExecStart=${realpathSync(process.execPath)} ${realPkg}/bin/ferry.js source-agent --config /etc/ferry/ferry.toml\n`);
    expect(readFileSync(join(root, 'etc/default/ferry'), 'utf8')).toMatch(/^#FERRY_CRIU=/m);
    // The config file the units read: the example, stamped, still a valid file for `ferry config check`.
    const toml = join(root, 'etc/ferry/ferry.toml');
    expect(statSync(toml).mode & 0o777).toBe(0o640);
    const checked = await run(ferry, ['config', 'check', '--config', toml], { timeoutMs: 30_000 });
    expect(checked.code, checked.stdout + checked.stderr).toBe(0);
    expect(statSync(join(root, 'etc/ferry/tls')).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'var/lib/ferry')).mode & 0o777).toBe(0o700);
    const again = await run(ferry, ['install-service', '--role', 'both', '--root', root], { timeoutMs: 30_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/^(write|update|make|tighten)/m);
    // An operator's edit of a unit is refused, nothing written; --force replaces it.
    const edited = `${readFileSync(destUnit, 'utf8')}# mine\n`;
    writeFileSync(destUnit, edited);
    const refused = await run(ferry, ['install-service', '--role', 'both', '--root', root], { timeoutMs: 30_000 });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('FERRY-0050');
    expect(readFileSync(destUnit, 'utf8')).toBe(edited);
    const forced = await run(ferry, ['install-service', '--role', 'both', '--root', root, '--force'], { timeoutMs: 30_000 });
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(destUnit, 'utf8')).not.toContain('# mine');

    // 5. systemd's own checks of the written units: no warning at all; the exposure scores for the report.
    if (canRun('systemd-analyze verify of the installed units', hasCommand('systemd-analyze'))) {
      const verify = await run('systemd-analyze', ['verify', destUnit, sourceUnit], { timeoutMs: 60_000 });
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.stderr.split('\n').filter((l) => l.includes('ferry-'))).toEqual([]);
      for (const unit of [destUnit, sourceUnit]) {
        const sec = await run('systemd-analyze', ['security', '--offline=true', unit], { timeoutMs: 60_000 });
        console.log(`systemd-analyze security: ${/Overall exposure level for (\S+): ([\d.]+ \S+)/.exec(sec.stdout)?.slice(1).join(' ') ?? sec.stderr.trim()}`);
      }
    }

    // 6. A real dest agent from the installed package: it listens, serves /metrics, stops cleanly on SIGTERM.
    const workDir = join(dir, 'work');
    // With the installed config file, its address, work dir and metrics overridden by flags (flags beat the file).
    agent = spawn(ferry, ['dest-agent', '--config', toml, '--listen', '127.0.0.1:0', '--insecure', '--work-dir', workDir, '--metrics', '127.0.0.1:0'], {
      cwd: '/',
      env: { ...process.env, FERRY_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    agent.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));
    const listening = await new Promise<{ port: number; metricsPort: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line within 30 s; stderr: ${stderr}`)), 30_000);
      createInterface({ input: agent!.stdout! }).on('line', (line) => {
        const ev = JSON.parse(line) as { event?: string; port: number; metricsPort: number };
        if (ev.event === 'listening') {
          clearTimeout(timer);
          resolve(ev);
        }
      });
      agent!.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the agent exited ${code} before listening; stderr: ${stderr}`));
      });
    });
    expect(listening.port).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${listening.metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(new RegExp(`^ferry_build_info\\{[^}]*version="${VERSION.replaceAll('.', '\\.')}"`, 'm'));
    const exited = new Promise<number | null>((resolve) => agent!.once('exit', (code) => resolve(code)));
    agent.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('no exit within 30 s'), 30_000).unref())]);
    expect(code, stderr).toBe(0);

    // 7. A package whose native addon is gone says so with its code and hint (here through `ferry setup`).
    const addon = join(pkg, 'build', 'Release', 'ferry_native.node');
    renameSync(addon, `${addon}.away`);
    const missing = await run(ferry, ['setup'], { timeoutMs: 180_000 });
    renameSync(`${addon}.away`, addon);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toMatch(/^native addon {2}MISSING: FERRY-9004 .*Install Ferry again/m);
  });
});
