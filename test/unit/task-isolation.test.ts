/**
 * `ferry run` isolation (issue 13, item 3) without a kernel: the launcher's command, the flags, mountinfo
 * parsing, which mounts of a task's own mount namespace are the host's (declared external to criu), the criu
 * arguments on both sides, and the dest's checks of a Restore's mount namespace.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCommand } from '../../cli/commands/run.js';
import { restoreMountNamespace, MAX_EXTERNAL_MOUNTS } from '../../dest-agent/restore-mount-namespace.js';
import { criuMountNamespaceArgs } from '../../shared/criu/criu-mount-namespace.js';
import { parseMountInfo } from '../../shared/kernel/mount-info.js';
import { externalMountsOf, readTaskMountNamespace } from '../../shared/kernel/task-mount-namespace.js';
import { isolationValue, launcher } from '../../source-agent/task-isolation.js';
import { expectFerryError, expectFerryRejection } from '../support/ferry-error-expect.js';

const HOST = `22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,mode=755
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
43 42 0:4 net:[4026532177] /run/netns/src rw shared:2 - nsfs nsfs rw
50 27 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
`;

/** The task's copy of HOST after ferry run's setup, plus a tmpfs of its own and an overmount of /dev. */
const TASK = `60 59 254:0 / / rw,relatime - ext4 /dev/vda rw
61 60 0:22 / /sys rw,relatime - sysfs sysfs rw
62 60 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,mode=755
63 62 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,mode=755
64 60 254:0 /run/netns /run/netns rw,relatime - ext4 /dev/vda rw
65 60 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
66 60 0:45 / /proc rw,nosuid,nodev,noexec - proc proc rw
67 60 0:46 / /tmp/own rw - tmpfs none rw
`;

let roots: string[] = [];
afterEach(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
  roots = [];
});

describe('the launcher and the flags', () => {
  it('host mounts: unshare --pid --fork [--ipc] setsid CMD', () => {
    expect(launcher({ ipc: 'host', mounts: 'host' }, 'sleep', ['9'], '/l/t.out', '/l/t.err')).toEqual(['unshare', '--pid', '--fork', 'setsid', 'sleep', '9']);
    expect(launcher({ ipc: 'private', mounts: 'host' }, 'sleep', ['9'], '/l/t.out', '/l/t.err')).toEqual(['unshare', '--pid', '--fork', '--ipc', 'setsid', 'sleep', '9']);
  });

  it('private mounts: a private mount namespace whose sh sets up /proc, opens the stdio files inside, then setsid CMD', () => {
    const l = launcher({ ipc: 'private', mounts: 'private' }, 'sleep', ['9'], '/l/t.out', '/l/t.err');
    expect(l.slice(0, 9)).toEqual(['unshare', '--pid', '--fork', '--ipc', '--mount', '--propagation', 'private', '--', 'sh']);
    expect(l.slice(-5)).toEqual(['ferry-run', '/l/t.out', '/l/t.err', 'sleep', '9']);
    const script = l[10]!;
    expect(script).toMatch(/umount -l \/proc\nmount -t proc/);
    expect(script.indexOf('exec </dev/null')).toBeLessThan(script.indexOf('umount'));
    expect(script.trim().split('\n').at(-1)).toBe('exec setsid "$@"');
  });

  it('--ipc and --mounts take host or private; anything else is BAD_ARGUMENT before anything starts', async () => {
    expect(isolationValue(undefined)).toBe('host');
    expect(isolationValue('private')).toBe('private');
    expect(isolationValue('shared')).toBeUndefined();
    await expectFerryRejection(runCommand(['--ipc', 'shared', '--', 'true']), 'BAD_ARGUMENT');
    await expectFerryRejection(runCommand(['--mounts', '', '--', 'true']), 'BAD_ARGUMENT');
  });
});

describe("a task's own mount namespace", () => {
  it('parses mountinfo: optional fields, octal escapes', () => {
    const m = parseMountInfo(HOST);
    expect(m).toHaveLength(7);
    expect(m[3]).toMatchObject({ id: 27, parentId: 1, dev: '254:0', root: '/', mountPoint: '/', fsType: 'ext4', source: '/dev/vda' });
    expect(m[5]).toMatchObject({ root: 'net:[4026532177]', fsType: 'nsfs' });
    expect(m[6]!.mountPoint).toBe('/mnt/with space');
  });

  it("declares external what the host has at the same place (once each), never the root, the task's proc or its own mounts", () => {
    expect(externalMountsOf(parseMountInfo(TASK), parseMountInfo(HOST))).toEqual(['/sys', '/dev', '/run/netns', '/mnt/with space']);
  });

  it('reads from /proc: undefined when the task shares our mount namespace, else its external mounts', () => {
    const root = mkdtempSync(join(tmpdir(), 'ferry-fake-proc-'));
    roots.push(root);
    for (const [pid, ns, text] of [
      ['self', 'mnt:[1]', HOST],
      ['7', 'mnt:[2]', TASK],
      ['8', 'mnt:[1]', HOST],
    ] as const) {
      mkdirSync(join(root, pid, 'ns'), { recursive: true });
      symlinkSync(ns, join(root, pid, 'ns', 'mnt'));
      writeFileSync(join(root, pid, 'mountinfo'), text);
    }
    expect(readTaskMountNamespace(8, root)).toBeUndefined();
    expect(readTaskMountNamespace(9, root)).toBeUndefined();
    expect(readTaskMountNamespace(7, root)).toEqual({ externalMounts: ['/sys', '/dev', '/run/netns', '/mnt/with space'] });
  });

  it('criu arguments: each external mount keyed by its path; restore adds --root /', () => {
    const ns = { externalMounts: ['/sys', '/mnt/with space'] };
    expect(criuMountNamespaceArgs(undefined, 'dump')).toEqual([]);
    expect(criuMountNamespaceArgs(ns, 'dump')).toEqual(['--external', 'mnt[/sys]:/sys', '--external', 'mnt[/mnt/with space]:/mnt/with space']);
    expect(criuMountNamespaceArgs(ns, 'restore')).toEqual(['--root', '/', '--external', 'mnt[/sys]:/sys', '--external', 'mnt[/mnt/with space]:/mnt/with space']);
    expect(criuMountNamespaceArgs({ externalMounts: [] }, 'restore')).toEqual(['--root', '/']);
  });
});

describe("the dest's checks of a Restore's mount namespace", () => {
  it('none asked: none; paths that exist here: taken as given', () => {
    expect(restoreMountNamespace(null)).toBeUndefined();
    expect(restoreMountNamespace({ externalMounts: ['/', '/proc', '/tmp'] })).toEqual({ externalMounts: ['/', '/proc', '/tmp'] });
  });

  it('malformed paths and too many are REQUEST_INVALID; a path missing here is MOUNT_MISSING_ON_DEST naming it', () => {
    for (const p of ['tmp', '/tmp/../etc', '/tmp/', '/tmp//x', '/a\0b', `/${'x'.repeat(5000)}`]) expectFerryError(() => restoreMountNamespace({ externalMounts: [p] }), 'REQUEST_INVALID');
    expectFerryError(() => restoreMountNamespace({ externalMounts: Array<string>(MAX_EXTERNAL_MOUNTS + 1).fill('/tmp') }), 'REQUEST_INVALID');
    const e = expectFerryError(() => restoreMountNamespace({ externalMounts: ['/tmp', '/no/such/ferry/path'] }), 'MOUNT_MISSING_ON_DEST');
    expect(e.detail).toContain('/no/such/ferry/path');
    expect(e.side).toBe('dest');
  });
});
