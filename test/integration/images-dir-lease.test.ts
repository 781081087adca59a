/**
 * The source's images dirs under a lease (real flocks held by real processes): the sweep removes the dir of a
 * holder killed with -9, never that of a live holder, and never a dir Ferry did not make.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logging/logger.js';
import { createImagesDir, sweepImagesRoot } from '../../source-agent/images-dir.js';
import { canRun } from '../../testbed/requirements.js';
import { standInRequirement, startStandIn, type StandIn } from '../support/agent-stand-in-process.js';

let root: string;
let outside: string;
const holders: StandIn[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'ferry-images-root-'));
  outside = mkdtempSync(join(tmpdir(), 'ferry-images-outside-'));
});
afterEach(async () => {
  for (const h of holders.splice(0)) await h.kill9();
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

const entries = (): string[] => readdirSync(root).sort();

describe('images dir lease', () => {
  it('release() removes the dir, then its lease file; a sweep leaves a dir leased in this process alone', async () => {
    const images = await createImagesDir(root, randomUUID());
    writeFileSync(join(images.dir, 'pages-1.img'), 'x');
    const name = basename(images.dir);
    expect(entries()).toEqual([name, `${name}.lease`].sort());
    expect(await sweepImagesRoot(root, silentLogger)).toEqual([]);
    expect(existsSync(join(images.dir, 'pages-1.img'))).toBe(true);
    await images.release();
    await images.release(); // twice is harmless
    expect(entries()).toEqual([]);
  });

  it('refuses an id that is not a migration id (the name is what the sweep trusts)', async () => {
    await expect(createImagesDir(root, '../x')).rejects.toThrow(RangeError);
    expect(entries()).toEqual([]);
  });

  it.skipIf(!canRun('images dir lease: holders in other processes', standInRequirement))(
    'a holder killed -9 leaves a dir the sweep removes; a live holder keeps its dir; foreign dirs stay',
    async () => {
      const killed = startStandIn(['images-dir', root, randomUUID()]);
      const live = startStandIn(['images-dir', root, randomUUID()]);
      holders.push(killed, live);
      const [killedDir, liveDir] = await Promise.all([killed.next(), live.next()]);
      // What Ferry did not make: another program's dir and file, a dir named like an images dir but without a
      // lease file, and an unheld lease whose "dir" is a symlink to a dir outside (never followed).
      mkdirSync(join(root, 'someone-elses'));
      writeFileSync(join(root, 'notes.txt'), 'keep');
      const unleased = `${randomUUID()}-0123456789ab`;
      mkdirSync(join(root, unleased));
      const linked = `${randomUUID()}-00112233aabb`;
      writeFileSync(join(outside, 'precious'), 'keep');
      symlinkSync(outside, join(root, linked));
      writeFileSync(join(root, `${linked}.lease`), '');

      // While both live, the sweep removes nothing of theirs.
      expect(await sweepImagesRoot(root, silentLogger)).toEqual([]);
      expect(existsSync(join(killedDir, 'pages-1.img'))).toBe(true);

      await killed.kill9();
      expect(await sweepImagesRoot(root, silentLogger)).toEqual([basename(killedDir)]);
      expect(existsSync(killedDir)).toBe(false);
      expect(existsSync(`${killedDir}.lease`)).toBe(false);
      expect(existsSync(join(liveDir, 'pages-1.img'))).toBe(true);
      expect(existsSync(`${liveDir}.lease`)).toBe(true);
      expect(entries()).toEqual([basename(liveDir), `${basename(liveDir)}.lease`, 'notes.txt', 'someone-elses', unleased, linked].sort());
      expect(readdirSync(outside)).toEqual(['precious']);

      // Once the live holder dies too, its dir goes at the next sweep.
      await live.kill9();
      expect(await sweepImagesRoot(root, silentLogger)).toEqual([basename(liveDir)]);
      expect(entries()).toEqual(['notes.txt', 'someone-elses', unleased, linked].sort());
      for (const e of entries()) rmSync(join(root, e), { recursive: true, force: true });
    },
    60_000,
  );

  it('a missing root holds nothing and is not made', async () => {
    expect(await sweepImagesRoot(join(root, 'none'), silentLogger)).toEqual([]);
    expect(existsSync(join(root, 'none'))).toBe(false);
  });

  it('leaves a root that is not private alone, and says so', async () => {
    const shared = mkdtempSync(join(tmpdir(), 'ferry-images-shared-'));
    try {
      const name = `${randomUUID()}-0123456789ab`;
      mkdirSync(join(shared, name));
      writeFileSync(join(shared, `${name}.lease`), '');
      chmodSync(shared, 0o777);
      const warned: string[] = [];
      const log = { ...silentLogger, warn: (msg: string) => void warned.push(msg) };
      expect(await sweepImagesRoot(shared, log)).toEqual([]);
      expect(existsSync(join(shared, name))).toBe(true);
      expect(warned).toEqual(['images root not swept']);
    } finally {
      rmSync(shared, { recursive: true, force: true });
    }
  });
});
