/**
 * setpriv --pdeathsig, which ties criu dump to its agent's life: found and probed here, refused with its code
 * when missing, and the guard that runs nothing once the spawner is gone. (The kill itself: criu-agent-death.)
 */
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { diesWithParent, PARENT_GONE_EXIT, requireSetpriv } from '../../shared/kernel/parent-death-signal.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

function run(command: string, args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 10_000 }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout }));
  });
}

describe.skipIf(!canRun('setpriv --pdeathsig', hasCommand('setpriv')))('parent death signal', () => {
  it('finds a setpriv that can set it, and runs a command through it', async () => {
    const setpriv = await requireSetpriv();
    expect(setpriv).toMatch(/^\/.*\/setpriv$/);
    const cmd = diesWithParent(setpriv, 'ferry-test', '/bin/sh', ['-c', 'echo "$@"', 'sh', 'a b', 'c']);
    expect(await run(cmd.command, cmd.args)).toEqual({ code: 0, stdout: 'a b c\n' });
  });

  it('runs nothing when its spawner is not its parent any more', async () => {
    const cmd = diesWithParent(await requireSetpriv(), 'ferry-test', '/bin/echo', ['ran']);
    const at = cmd.args.indexOf(String(process.pid));
    expect(at).toBeGreaterThan(0);
    cmd.args[at] = '1'; // as if this process had died and the child been reparented to init
    expect(await run(cmd.command, cmd.args)).toEqual({ code: PARENT_GONE_EXIT, stdout: '' });
  });

  it('is SETPRIV_MISSING where there is none (before any dump runs)', async () => {
    const e = await expectFerryRejection(requireSetpriv({ phase: 'negotiate', side: 'source' }, ['/nonexistent-ferry-dir']), 'SETPRIV_MISSING');
    expect(e.phase).toBe('negotiate');
    expect(e.detail).toContain('/nonexistent-ferry-dir');
  });
});
