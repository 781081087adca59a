/**
 * The compiled `ferry` with a config file: `ferry dest-agent --config F --insecure` listens where the file
 * says (listen and work-dir in the file only), `ferry source-agent --config F` takes its socket and the
 * [paths] of the file (it sweeps the file's images dir at start), and `ferry config check` passes the shipped
 * example and refuses a broken file with CONFIG_INVALID and exit 2.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runFerry, startFerry, tail, type FerryLine } from '../../testbed/ferry-process.js';
import { canRun, isRoot, requireBuilt } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';

const runnable = canRun('e2e config file (dest agent)', isRoot());

describe('the config file, from dist', () => {
  let dir: string;

  beforeAll(() => {
    requireBuilt();
    dir = makeTempDir('ferry-e2e-config-');
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it.runIf(runnable)('starts a dest agent whose address and work dir are in the file only, and stops it', async () => {
    const workDir = join(dir, 'work');
    const config = join(dir, 'ferry.toml');
    writeFileSync(config, `[dest-agent]\nlisten = "127.0.0.1:0"\nwork-dir = "${workDir}"\n`);
    const agent = startFerry(['dest-agent', '--config', config, '--insecure'], { timeoutMs: 60_000 });
    try {
      const listening = (await agent.waitForLine((l) => l.kind === 'other' && l.value.event === 'listening', 30_000)) as Extract<FerryLine, { kind: 'other' }>;
      expect(listening.value).toMatchObject({ event: 'listening', tls: false });
      expect(listening.value.address).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(listening.value.port).toBeGreaterThan(0);
      // The work dir is the file's: the agent made and marked it.
      expect(existsSync(join(workDir, '.ferry-work-dir'))).toBe(true);
      const configLine = agent
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg?: string; file?: string; settings?: { key: string; from: string }[] })
        .find((l) => l.msg === 'config');
      expect(configLine?.file).toBe(config);
      expect(configLine?.settings?.find((s) => s.key === 'dest-agent.work-dir')?.from).toBe('file');
      expect(configLine?.settings?.find((s) => s.key === 'dest-agent.insecure')?.from).toBe('flag');
    } finally {
      agent.child.kill('SIGTERM');
      const r = await agent.done;
      expect(r.exitCode, tail(r.stderr)).toBe(0);
    }
  });

  it.runIf(runnable)("starts a source agent on the file's socket, sweeping the file's images dir", async () => {
    const images = join(dir, 'images');
    // What a killed agent leaves: an images dir and its lease, which no process holds.
    const leftover = `${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}-${'1'.repeat(12)}`;
    mkdirSync(join(images, leftover), { recursive: true, mode: 0o700 });
    writeFileSync(join(images, `${leftover}.lease`), '');
    const socket = join(dir, 'run', 'source.sock');
    const config = join(dir, 'source.toml');
    writeFileSync(config, `[source-agent]\nsocket = "${socket}"\ninsecure = true\n[paths]\nimages-dir = "${images}"\nstate-dir = "${join(dir, 'state')}"\n`);
    // FERRY_STATE_DIR (the harness sets it) would win over the file: unset it here.
    const agent = startFerry(['source-agent', '--config', config], { timeoutMs: 60_000, env: { FERRY_STATE_DIR: '' } });
    try {
      const listening = (await agent.waitForLine((l) => l.kind === 'other' && l.value.event === 'listening', 30_000)) as Extract<FerryLine, { kind: 'other' }>;
      expect(listening.value.socket).toBe(socket);
      expect(existsSync(join(images, leftover))).toBe(false);
      expect(agent.stderr()).toContain('"key":"paths.state-dir","value":"' + join(dir, 'state') + '","from":"file"');
    } finally {
      agent.child.kill('SIGTERM');
      const r = await agent.done;
      expect(r.exitCode, `signal ${r.signal} ` + tail(r.stderr)).toBe(0);
    }
  });

  it('passes deploy/ferry.toml.example through `ferry config check`', async () => {
    const r = await runFerry(['config', 'check', '--config', join(REPO_ROOT, 'deploy', 'ferry.toml.example')], { timeoutMs: 30_000 });
    expect(r.exitCode, r.stdout + tail(r.stderr)).toBe(0);
    expect(r.stdout).toMatch(/ferry\.toml\.example: valid/);
  });

  it('refuses a broken file with CONFIG_INVALID (exit 2), naming the key and line', async () => {
    const broken = join(dir, 'broken.toml');
    writeFileSync(broken, '[dest-agent]\nlisten = "127.0.0.1:7070"\nwork-dri = "/srv/ferry"\n');
    const r = await runFerry(['dest-agent', '--config', broken, '--insecure'], { timeoutMs: 30_000 });
    expect(r.exitCode, tail(r.stderr)).toBe(2);
    expect(r.stderr).toContain('FERRY-0030');
    expect(r.stderr).toContain('broken.toml:3: dest-agent.work-dri: unknown key; did you mean dest-agent.work-dir?');
  });
});
