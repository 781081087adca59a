/**
 * The freeze's images dir through the state machine (fakes of the host and the dest, real files): a migration
 * leaves neither its dir nor its lease behind, whether it commits or fails after the dump, and the freeze first
 * sweeps what a killed agent left (and only that).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logging/logger.js';
import { compileMigrateOptions } from '../../source-agent/config/migrate-options.js';
import { migrate } from '../../source-agent/migration/orchestrator.js';
import { world, type Failure } from '../fakes/fake-migration-world.js';

let imagesRoot: string;
beforeEach(() => {
  imagesRoot = mkdtempSync(join(tmpdir(), 'ferry-freeze-images-'));
});
afterEach(() => {
  rmSync(imagesRoot, { recursive: true, force: true });
});

async function run(fail?: Failure): Promise<unknown> {
  const opts = compileMigrateOptions({ pid: 4242, to: '127.0.0.1:1', imagesRoot, floorPages: 1 });
  try {
    await migrate(opts, { log: silentLogger, emit: () => undefined, signal: new AbortController().signal, ports: world(fail).ports });
    return undefined;
  } catch (e) {
    return e;
  }
}

describe("the freeze's images dir", () => {
  for (const fail of [undefined, 'dump', 'final-delta', 'restore'] as const) {
    it(`${fail ? `a failure at ${fail}` : 'a committed migration'} leaves no images dir and no lease, only the logs dir`, async () => {
      const e = await run(fail);
      expect(e === undefined).toBe(fail === undefined);
      expect(readdirSync(imagesRoot)).toEqual(['logs']);
    });
  }

  it("sweeps a killed agent's dir (an unheld lease) before the dump; another program's dir stays", async () => {
    const leftover = `${randomUUID()}-0123456789ab`;
    mkdirSync(join(imagesRoot, leftover));
    writeFileSync(join(imagesRoot, leftover, 'pages-1.img'), 'x');
    writeFileSync(join(imagesRoot, `${leftover}.lease`), '');
    mkdirSync(join(imagesRoot, 'not-ferrys'));
    expect(await run()).toBeUndefined();
    expect(readdirSync(imagesRoot).sort()).toEqual(['logs', 'not-ferrys']);
  });
});
