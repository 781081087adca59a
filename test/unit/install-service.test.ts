/**
 * `ferry install-service`'s plan against a scratch root: what it writes, what it keeps, what it refuses (and
 * that a refusal writes nothing), and the units' hardening rules that follow from CRIU (the comments in
 * deploy/systemd/ say why each directive is in or out).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { isUnedited } from '../../cli/install/file-stamp.js';
import { applyInstall, planInstall, planRefusal, type InstallAction } from '../../cli/install/install-plan.js';
import { commentedOut, serviceLayout, type ServiceInstallation } from '../../cli/install/service-files.js';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';

const inst: ServiceInstallation = { node: '/usr/bin/node', packageRoot: REPO_ROOT.replace(/\/$/, ''), version: '0.1.0' };
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function scratch(): string {
  const d = makeTempDir('ferry-install-unit-');
  dirs.push(d);
  return d;
}
const kinds = (actions: InstallAction[]): Record<string, string> => Object.fromEntries(actions.map((a) => [a.path, a.kind]));

/** The [Service] directives of a rendered unit, comments left out. */
function directives(content: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of content.split('\n')) {
    const d = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (d) m.set(d[1]!, d[2]!);
  }
  return m;
}

describe('serviceLayout', () => {
  it('renders both units from deploy/systemd with absolute paths and no placeholder left', () => {
    const layout = serviceLayout('both', inst);
    expect(layout.units).toEqual(['ferry-dest-agent.service', 'ferry-source-agent.service']);
    for (const f of layout.files) {
      expect(f.content).not.toMatch(/@[A-Z]+@/);
      expect(isUnedited(f.content)).toBe(true);
    }
    const [dest, source] = layout.files.map((f) => directives(f.content));
    expect(dest!.get('ExecStart')).toBe(`/usr/bin/node ${inst.packageRoot}/bin/ferry.js dest-agent --config /etc/ferry/ferry.toml`);
    expect(source!.get('ExecStart')).toBe(`/usr/bin/node ${inst.packageRoot}/bin/ferry.js source-agent --config /etc/ferry/ferry.toml`);
    expect(serviceLayout('dest', inst).units).toEqual(['ferry-dest-agent.service']);
    expect(serviceLayout('source', inst).units).toEqual(['ferry-source-agent.service']);
  });

  it('keeps the directives CRIU rules out out of both units, and KillMode=process in both', () => {
    const [dest, source] = serviceLayout('both', inst).files.map((f) => directives(f.content));
    // A mount namespace of the service's own: criu would carry the host's mounts as the task's (source), the
    // restored copies would live in it (dest). And the trackers must see the tasks.
    const mountNamespace = ['ProtectSystem', 'ProtectHome', 'PrivateTmp', 'ReadWritePaths', 'ReadOnlyPaths', 'InaccessiblePaths', 'PrivateDevices', 'PrivateMounts', 'ProtectProc', 'ProcSubset', 'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'PrivateNetwork', 'PrivateUsers', 'ProtectHostname', 'RestrictNamespaces', 'MemoryDenyWriteExecute', 'SystemCallFilter', 'DynamicUser'];
    for (const [name, unit] of [['dest', dest!], ['source', source!]] as const) {
      expect(mountNamespace.filter((d) => unit.has(d)), name).toEqual([]);
      expect(unit.get('KillMode'), name).toBe('process');
      expect(unit.get('UMask'), name).toBe('0077');
      expect(unit.get('EnvironmentFile'), name).toBe('-/etc/default/ferry');
    }
    // Inherited by every restored copy, so never on the dest.
    const inherited = ['NoNewPrivileges', 'CapabilityBoundingSet', 'RestrictAddressFamilies', 'LockPersonality', 'RestrictRealtime', 'RestrictSUIDSGID', 'SystemCallArchitectures', 'ProtectClock'];
    expect(inherited.filter((d) => dest!.has(d))).toEqual([]);
    // What CRIU's dump needs stays in the source's bounding set.
    const dropped = source!.get('CapabilityBoundingSet')!.replace(/^~/, '').split(/\s+/);
    for (const cap of ['CAP_SYS_ADMIN', 'CAP_SYS_PTRACE', 'CAP_CHECKPOINT_RESTORE', 'CAP_NET_ADMIN', 'CAP_SYS_RESOURCE', 'CAP_DAC_OVERRIDE', 'CAP_KILL']) {
      expect(dropped).not.toContain(cap);
    }
  });

  it('refuses a node or package path that systemd would split or expand', () => {
    expect(() => serviceLayout('dest', { ...inst, packageRoot: '/opt/my ferry' })).toThrow(expect.objectContaining({ code: 'FERRY-0001' }));
    expect(() => serviceLayout('dest', { ...inst, node: '/opt/node%i/bin/node' })).toThrow(expect.objectContaining({ code: 'FERRY-0001' }));
  });
});

describe('planInstall', () => {
  it('makes everything on an empty root, with the modes, and nothing the second time', () => {
    const root = scratch();
    const layout = serviceLayout('both', inst);
    const first = planInstall(layout, root, false);
    expect(first.every((a) => a.kind === 'mkdir' || a.kind === 'create')).toBe(true);
    applyInstall(first);
    expect(statSync(join(root, 'etc/ferry/tls')).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'var/lib/ferry')).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'etc/systemd/system/ferry-dest-agent.service')).mode & 0o777).toBe(0o644);
    expect(statSync(join(root, 'etc/default/ferry')).mode & 0o777).toBe(0o640);
    // The units' config file: the example until the operator edits it.
    // The example with every setting commented out: nothing of an example's values is live until edited.
    const toml = readFileSync(join(root, 'etc/ferry/ferry.toml'), 'utf8');
    expect(toml).toContain(commentedOut(readFileSync(join(inst.packageRoot, 'deploy', 'ferry.toml.example'), 'utf8')));
    expect(toml).toMatch(/^# listen = "/m);
    expect(toml).toMatch(/^\[dest-agent\]$/m);
    expect(toml.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#') && !l.startsWith('['))).toEqual([]);
    expect(statSync(join(root, 'etc/ferry/ferry.toml')).mode & 0o777).toBe(0o640);
    expect(planInstall(layout, root, false).every((a) => a.kind === 'same')).toBe(true);
  });

  it('never follows a symlink planted at its temporary file name (a --root another user can write)', () => {
    const root = scratch();
    const victim = join(root, 'victim');
    writeFileSync(victim, 'precious\n', { mode: 0o600 });
    mkdirSync(join(root, 'etc/ferry'), { recursive: true });
    symlinkSync(victim, join(root, 'etc/ferry/.ferry.toml.ferry-new'));
    applyInstall(planInstall(serviceLayout('dest', inst), root, false));
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(statSync(victim).mode & 0o777).toBe(0o600);
    const toml = join(root, 'etc/ferry/ferry.toml');
    expect(lstatSync(toml).isFile()).toBe(true);
    expect(isUnedited(readFileSync(toml, 'utf8'))).toBe(true);
  });

  it('updates a file as an older version wrote it, refuses an edited unit (writing nothing), keeps an edited env file', () => {
    const root = scratch();
    const layout = serviceLayout('dest', inst);
    applyInstall(planInstall(layout, root, false));
    const unit = join(root, 'etc/systemd/system/ferry-dest-agent.service');
    const env = join(root, 'etc/default/ferry');
    // As an older release wrote it: stamped, unedited, different.
    const older = serviceLayout('dest', { ...inst, node: '/usr/local/bin/node', version: '0.0.9' }).files[0]!.content;
    writeFileSync(unit, older);
    expect(kinds(planInstall(layout, root, false))[unit]).toBe('update');
    // Edited by the operator: refused as a whole, before anything is written.
    writeFileSync(unit, `${older}Nice=5\n`);
    writeFileSync(env, `${readFileSync(env, 'utf8')}FERRY_LOG_LEVEL=debug\n`);
    rmSync(join(root, 'etc/ferry/tls'), { recursive: true });
    const plan = planInstall(layout, root, false);
    expect(kinds(plan)[unit]).toBe('refuse');
    expect(kinds(plan)[env]).toBe('keep');
    const toml = join(root, 'etc/ferry/ferry.toml');
    writeFileSync(toml, `${readFileSync(toml, 'utf8')}\n[log]\nlevel = "debug"\n`);
    expect(kinds(planInstall(layout, root, true))[toml]).toBe('keep');
    const refusal = planRefusal(plan);
    expect(refusal).toBeInstanceOf(FerryError);
    expect(refusal!.code).toBe('FERRY-0050');
    expect(refusal!.detail).toContain(unit);
    // --force replaces both.
    const forced = planInstall(layout, root, true);
    expect(planRefusal(forced)).toBeUndefined();
    expect(kinds(forced)[unit]).toBe('replace');
    expect(kinds(forced)[env]).toBe('replace');
    applyInstall(forced);
    expect(readFileSync(unit, 'utf8')).toBe(layout.files[0]!.content);
    expect(readFileSync(env, 'utf8')).not.toContain('FERRY_LOG_LEVEL=debug');
  });

  it('tightens a looser mode of its own directories only, and names a path that is not a directory', () => {
    const root = scratch();
    mkdirSync(join(root, 'var/lib/ferry'), { recursive: true });
    chmodSync(join(root, 'var/lib/ferry'), 0o755);
    mkdirSync(join(root, 'etc/default'), { recursive: true });
    chmodSync(join(root, 'etc/default'), 0o775);
    const plan = kinds(planInstall(serviceLayout('dest', inst), root, false));
    expect(plan[join(root, 'var/lib/ferry')]).toBe('chmod');
    expect(plan[join(root, 'etc/default')]).toBe('same');
    writeFileSync(join(root, 'etc/ferry'), 'not a dir');
    expect(() => planInstall(serviceLayout('dest', inst), root, false)).toThrow(expect.objectContaining({ code: 'FERRY-0051' }));
  });
});

describe('provision-criu.sh --find-only (how the agents and the CLI find CRIU)', () => {
  it('never provisions: with no CRIU anywhere it exits 3 and names `ferry setup`', () => {
    const cache = scratch();
    const env = { PATH: '/usr/bin:/bin', FERRY_CACHE_DIR: cache };
    const onPath = spawnSync('sh', ['-c', 'command -v criu'], { env, encoding: 'utf8' }).stdout.trim();
    const r = spawnSync('bash', [join(REPO_ROOT, 'scripts', 'provision-criu.sh'), '--find-only'], { env, encoding: 'utf8', timeout: 30_000 });
    if (onPath && r.status === 0) {
      console.warn(`SKIP the no-CRIU case of --find-only: ${onPath} is a usable criu on PATH here`);
      return;
    }
    expect(r.status, r.stderr).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('run `ferry setup`');
    expect(readdirSync(cache)).toEqual([]);
  });
});
