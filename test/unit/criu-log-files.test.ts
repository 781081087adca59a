/** The CRIU logs Ferry keeps are bounded by count and bytes, newest kept, and nothing else is touched. */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CRIU_LOG_BOUNDS, criuLogFileName, criuOutputFile, pruneCriuLogs, readCriuOutputTail } from '../../shared/criu/criu-log-files.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-criu-logs-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const ids = ['0f0e9b52-6a0c-4f7e-9c39-3b8f2d3a1c01', '1a2b3c4d-0000-4000-8000-00000000000b', '2b3c4d5e-1111-4111-8111-11111111111c', '3c4d5e6f-2222-4222-8222-22222222222d'];

/** A file of `bytes` bytes whose mtime is `age` seconds in the past (0 = newest). */
function file(name: string, bytes: number, age: number): void {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(bytes, 0x61));
  const t = Date.now() / 1000 - 1000 - age;
  utimesSync(path, t, t);
}

const left = (): string[] => readdirSync(dir).sort();

describe('CRIU log files', () => {
  it('names a dump and a restore log after the migration id, and the output beside the log', () => {
    expect(criuLogFileName(ids[0]!, 'dump')).toBe(`${ids[0]}-dump.log`);
    expect(criuLogFileName('session-42', 'restore')).toBe('session-42-restore.log');
    expect(criuOutputFile('/x/a-dump.log')).toBe('/x/a-dump.log.out');
    expect(() => criuLogFileName('../../etc/passwd', 'dump')).toThrow(RangeError);
    expect(() => criuLogFileName('short', 'dump')).toThrow(RangeError);
  });

  it('keeps at most maxFiles, the newest', async () => {
    ids.forEach((id, i) => file(criuLogFileName(id, 'dump'), 10, i * 10)); // ids[0] newest
    file(criuOutputFile(criuLogFileName(ids[3]!, 'dump')), 10, 35); // the oldest of all
    const removed = await pruneCriuLogs(dir, { maxFiles: 2, maxBytes: 1 << 20 });
    expect(removed.sort()).toEqual([`${ids[2]}-dump.log`, `${ids[3]}-dump.log`, `${ids[3]}-dump.log.out`].sort());
    expect(left()).toEqual([`${ids[0]}-dump.log`, `${ids[1]}-dump.log`]);
  });

  it('keeps at most maxBytes, the newest; once one does not fit nothing older stays', async () => {
    file(`${ids[0]}-restore.log`, 400, 0);
    file(`${ids[1]}-restore.log`, 500, 10);
    file(`${ids[2]}-restore.log`, 50, 20); // would fit by itself, but is older than one that did not
    await pruneCriuLogs(dir, { maxFiles: 10, maxBytes: 800 });
    expect(left()).toEqual([`${ids[0]}-restore.log`]);
  });

  it('never touches (nor counts) what Ferry did not name: other files, directories, symlinks', async () => {
    file('notes.txt', 10_000, 100);
    file('x-restore.log', 10_000, 100); // too short for a migration id
    file(`${ids[0]}-dump.log.bak`, 10_000, 100);
    file(`${ids[1]}-dump.log`, 10, 0);
    mkdirSync(join(dir, `${ids[2]}-dump.log`));
    symlinkSync('/etc/hostname', join(dir, `${ids[3]}-dump.log`));
    const before = left();
    expect(await pruneCriuLogs(dir, { maxFiles: 1, maxBytes: 100 })).toEqual([]);
    expect(await pruneCriuLogs(dir, { maxFiles: 0, maxBytes: 0 })).toEqual([`${ids[1]}-dump.log`]);
    expect(left()).toEqual(before.filter((n) => n !== `${ids[1]}-dump.log`));
  });

  it('a missing dir holds nothing; the defaults are named bounds', async () => {
    expect(await pruneCriuLogs(join(dir, 'none'))).toEqual([]);
    expect(CRIU_LOG_BOUNDS).toEqual({ maxFiles: 64, maxBytes: 32 * 1024 * 1024 });
  });

  it("reads the tail of criu's output, bounded; a missing file reads as empty", async () => {
    const out = join(dir, 'a.out');
    writeFileSync(out, 'x'.repeat(10_000) + 'the end');
    const tail = await readCriuOutputTail(out);
    expect(tail.length).toBe(4096);
    expect(tail.endsWith('the end')).toBe(true);
    expect(await readCriuOutputTail(join(dir, 'none.out'))).toBe('');
  });
});
