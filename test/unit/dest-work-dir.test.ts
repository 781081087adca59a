/**
 * The dest's work dir (finding of issue 9: `--work-dir` pointed at a directory of unrelated files removed them
 * all at start-up). Ferry makes or adopts only a new or empty directory, refuses any other with
 * WORK_DIR_FOREIGN before touching it, and at start removes only the session dirs it made and marked.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startDestAgent } from '../../dest-agent/dest-agent.js';
import { recoverSessions } from '../../dest-agent/restart-recovery.js';
import { markSessionDir, openWorkDir, WORK_DIR_MARKER } from '../../dest-agent/work-dir.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ferry-workdir-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A directory as an operator's would be: files and directories, one named like a session. */
async function foreignDir(): Promise<string> {
  const dir = join(root, 'var-lib');
  await mkdir(join(dir, 'postgresql'), { recursive: true });
  await writeFile(join(dir, 'postgresql', 'PG_VERSION'), '16\n');
  await mkdir(join(dir, 'backup-2024-01-01'));
  await writeFile(join(dir, 'notes.txt'), 'keep me');
  return dir;
}

async function tree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

describe('openWorkDir', () => {
  it('makes a missing directory (mode 0700) and marks it', async () => {
    const dir = join(root, 'a', 'b');
    await openWorkDir(dir);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect(existsSync(join(dir, WORK_DIR_MARKER))).toBe(true);
    await openWorkDir(dir); // idempotent
  });

  it('adopts an empty directory', async () => {
    await openWorkDir(root);
    expect(await readdir(root)).toEqual([WORK_DIR_MARKER]);
  });

  it('refuses a non-empty directory without the marker with WORK_DIR_FOREIGN, touching nothing', async () => {
    const dir = await foreignDir();
    const before = await tree(dir);
    const e = await expectFerryRejection(openWorkDir(dir), 'WORK_DIR_FOREIGN');
    expect(e.detail).toContain(dir);
    expect(await tree(dir)).toEqual(before);
  });

  it('refuses a file, or a symbolic link, as the work dir', async () => {
    await writeFile(join(root, 'file'), 'x');
    await expectFerryRejection(openWorkDir(join(root, 'file')), 'WORK_DIR_FOREIGN');
    await mkdir(join(root, 'real'));
    await symlink(join(root, 'real'), join(root, 'link'));
    await expectFerryRejection(openWorkDir(join(root, 'link')), 'WORK_DIR_FOREIGN');
  });

  it('the dest agent refuses to start on a foreign directory, before it removes or listens to anything', async () => {
    const dir = await foreignDir();
    const before = await tree(dir);
    await expectFerryRejection(startDestAgent({ listen: { host: '127.0.0.1', port: 0 }, workDir: dir, log: silentLogger, security: INSECURE_LOOPBACK }), 'WORK_DIR_FOREIGN');
    expect(await tree(dir)).toEqual(before);
    expect(await readFile(join(dir, 'notes.txt'), 'utf8')).toBe('keep me');
  });
});

describe('start-up cleanup in a marked work dir', () => {
  it('removes only the session dirs Ferry marked, and leaves everything else alone', async () => {
    await openWorkDir(root);
    const id = '0b5e6f7a-1111-4222-8333-944445555666';
    await mkdir(join(root, id, 'images'), { recursive: true });
    await markSessionDir(join(root, id), id);
    // Named like a session but not marked as one, marked with another id, a symbolic link, a plain file.
    await mkdir(join(root, 'backup-2024-01-01'));
    await writeFile(join(root, 'backup-2024-01-01', 'db.dump'), 'x');
    await mkdir(join(root, 'aaaaaaaa-copied'));
    await markSessionDir(join(root, 'aaaaaaaa-copied'), 'bbbbbbbb-original');
    const outside = join(root, '..', `${root.split('/').pop()}-outside`);
    await mkdir(outside, { recursive: true });
    try {
      await writeFile(join(outside, '.ferry-session'), 'cccccccc-linked\n');
      await writeFile(join(outside, 'precious'), 'x');
      await symlink(outside, join(root, 'cccccccc-linked'));
      await writeFile(join(root, 'dddddddd-file'), 'x');
      await mkdir(join(root, 'logs'));

      const found = await recoverSessions(root, silentLogger, () => Promise.reject(new Error('nothing to revive')));
      expect(found.ended).toEqual([]); // the session dir had no journal: removed, nothing to remember
      expect(existsSync(join(root, id))).toBe(false);
      expect((await readdir(root)).sort()).toEqual(['.ferry-work-dir', 'aaaaaaaa-copied', 'backup-2024-01-01', 'cccccccc-linked', 'dddddddd-file', 'logs']);
      expect(existsSync(join(root, 'backup-2024-01-01', 'db.dump'))).toBe(true);
      expect(existsSync(join(outside, 'precious'))).toBe(true);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});
