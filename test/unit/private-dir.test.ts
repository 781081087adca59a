/** The images directory is root's alone: another user's, a shared-writable one or a symlink is refused before the dump. */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensurePrivateDirectory } from '../../shared/kernel/private-dir.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const root = mkdtempSync(join(tmpdir(), 'ferry-private-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('ensurePrivateDirectory', () => {
  it('makes a missing directory 0700', () => {
    const dir = join(root, 'new');
    ensurePrivateDirectory(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    ensurePrivateDirectory(dir); // and takes its own again
  });

  it('refuses a symlink, a directory others may write, and another user\'s (IMAGES_DIR_UNSAFE)', () => {
    mkdirSync(join(root, 'real'));
    symlinkSync(join(root, 'real'), join(root, 'link'));
    expectFerryError(() => ensurePrivateDirectory(join(root, 'link')), 'IMAGES_DIR_UNSAFE');
    mkdirSync(join(root, 'shared'));
    chmodSync(join(root, 'shared'), 0o777);
    expectFerryError(() => ensurePrivateDirectory(join(root, 'shared')), 'IMAGES_DIR_UNSAFE');
    if (process.geteuid?.() === 0) {
      mkdirSync(join(root, 'theirs'), { mode: 0o700 });
      chownSync(join(root, 'theirs'), 65534, 65534);
      expectFerryError(() => ensurePrivateDirectory(join(root, 'theirs')), 'IMAGES_DIR_UNSAFE');
    }
  });
});
