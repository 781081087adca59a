/**
 * Who may drive the source agent: the permission rule (kill's and ptrace's), its tree-wide check, the check
 * repeated as the migration goes on, and the dest allow-list. Pure: credentials come from fixtures.
 */
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logging/logger.js';
import { parseTaskIds, type IdQuad, type TaskCredentials } from '../../shared/kernel/task-credentials.js';
import {
  authorizeMigration,
  permissionLostError,
  reauthorizeOnProgress,
  refusalFor,
  type Caller,
  type TreeTaskCredentials,
} from '../../source-agent/caller-permission.js';
import { DestAllowList } from '../../source-agent/dest-allow-list.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const root: Caller = { pid: 10, uid: 0, gid: 0, groups: [] };
const alice: Caller = { pid: 11, uid: 1000, gid: 1000, groups: [1000, 27] };

const task = (uids: IdQuad, gids: IdQuad = [1000, 1000, 1000, 1000], dumpable = true): TaskCredentials => ({ uids, gids, dumpable });
const own = task([1000, 1000, 1000, 1000]);

describe('the permission rule', () => {
  it.each<[string, Caller, TaskCredentials, boolean]>([
    ['root may migrate a root task', root, task([0, 0, 0, 0], [0, 0, 0, 0]), true],
    ['root may migrate a non-dumpable task of anyone', root, task([5, 5, 5, 5], [5, 5, 5, 5], false), true],
    ['a user may migrate a task of its own', alice, own, true],
    ['... whose gid is one of its supplementary groups (sg, newgrp)', alice, task([1000, 1000, 1000, 1000], [27, 27, 27, 27]), true],
    ['a user may not migrate a root task', alice, task([0, 0, 0, 0], [0, 0, 0, 0]), false],
    ["a user may not migrate another user's task", alice, task([1001, 1001, 1001, 1001]), false],
    // kill(2) would allow these (real uid is the caller's), ptrace(2) would not: a setuid program it started.
    ['nor a setuid-root program it started', alice, task([1000, 0, 0, 0]), false],
    ['nor one that only swapped its effective uid', alice, task([1000, 0, 1000, 1000]), false],
    ['nor one whose saved uid is root', alice, task([1000, 1000, 0, 1000]), false],
    ['nor one with a foreign filesystem uid', alice, task([1000, 1000, 1000, 0]), false],
    ['nor a setgid program of a group it lacks', alice, task([1000, 1000, 1000, 1000], [1000, 42, 42, 42]), false],
    ['nor a task that guards its memory (not dumpable)', alice, task([1000, 1000, 1000, 1000], undefined, false), false],
    // The caller's effective uid (SO_PEERCRED) against the target's saved uid: kill's rule alone would pass.
    ['nor a task that only has the caller as saved uid', alice, task([1001, 1001, 1000, 1001]), false],
  ])('%s', (_what, caller, t, allowed) => {
    expect(refusalFor(caller, t) === undefined).toBe(allowed);
  });

  it('reads the four uids and gids of /proc/PID/status', () => {
    const text = 'Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t42\t1000\nGroups:\t27 1000\n';
    expect(parseTaskIds(text)).toEqual({ uids: [1000, 0, 0, 0], gids: [1000, 1000, 42, 1000] });
    expect(() => parseTaskIds('Name:\tx\nUid:\t1000\t0\n')).toThrow(/Uid/);
  });
});

describe('the tree-wide check', () => {
  const tree = (...tasks: [pid: number, tid: number, TaskCredentials][]): TreeTaskCredentials[] => tasks.map(([pid, tid, c]) => ({ pid, tid, ...c }));

  it('lets root through without reading anything', () => {
    authorizeMigration(root, 4242, () => {
      throw new Error('read');
    });
  });

  it('checks every process and every thread, not only the root', () => {
    authorizeMigration(alice, 100, () => tree([100, 100, own], [101, 101, own], [101, 102, own]));
    // A foreign child, or one foreign thread of the caller's own root, is enough to refuse the whole tree.
    expectFerryError(() => authorizeMigration(alice, 100, () => tree([100, 100, own], [101, 101, task([1000, 0, 0, 0])])), 'CALLER_NOT_PERMITTED');
    expectFerryError(() => authorizeMigration(alice, 100, () => tree([100, 100, own], [100, 103, task([0, 0, 0, 0])])), 'CALLER_NOT_PERMITTED');
  });

  it('refuses a pid that does not exist like a foreign one: no oracle of which pids exist', () => {
    const gone = expectFerryError(() => authorizeMigration(alice, 100, () => undefined), 'CALLER_NOT_PERMITTED');
    const foreign = expectFerryError(() => authorizeMigration(alice, 100, () => tree([100, 100, task([0, 0, 0, 0])])), 'CALLER_NOT_PERMITTED');
    expect(gone.message).toBe(foreign.message);
    // Nor whose it is: the answer is word for word the same, with no uid, gid or dumpable state of another.
    expect(gone.detail).toBe(foreign.detail);
  });
});

describe('the check repeated while the migration runs', () => {
  it('aborts with CALLER_NOT_PERMITTED once the tree holds a task the caller may not migrate', () => {
    let tasks: TreeTaskCredentials[] = [{ pid: 100, tid: 100, ...own }];
    const controller = new AbortController();
    const sink = reauthorizeOnProgress(alice, 100, controller, silentLogger, () => tasks);
    sink({ kind: 'phase', phase: 'prepare' });
    expect(controller.signal.aborted).toBe(false);
    tasks = [...tasks, { pid: 101, tid: 101, ...task([1000, 0, 0, 0]) }]; // a child exec'd a setuid program
    sink({ kind: 'round', round: {} as never, pagesSent: 0, bytesSent: 0, rateBytesPerSecond: 0 });
    expect(controller.signal.aborted).toBe(true);
    expect((controller.signal.reason as FerryError).key).toBe('CALLER_NOT_PERMITTED');
  });

  it('checks as each phase begins except the commit and the fill, which are never interrupted', () => {
    let reads = 0;
    const sink = reauthorizeOnProgress(alice, 100, new AbortController(), silentLogger, () => {
      reads++;
      return [{ pid: 100, tid: 100, ...own }];
    });
    for (const phase of ['prepare', 'precopy', 'freeze', 'final-delta', 'restore', 'commit', 'fill'] as const) sink({ kind: 'phase', phase });
    sink({ kind: 'decision' } as never);
    expect(reads).toBe(5);
  });

  it("reports the lost permission, not the orchestrator's CANCELLED, with the rollback's outcome", () => {
    const controller = new AbortController();
    const reason = new FerryError('CALLER_NOT_PERMITTED');
    controller.abort(reason);
    const cancelled = new FerryError('CANCELLED', { phase: 'precopy', sourceState: 'running' });
    cancelled.rollbackErrors.push(new Error('thaw failed'));
    const reported = permissionLostError(controller.signal, cancelled) as FerryError;
    expect(reported).toMatchObject({ key: 'CALLER_NOT_PERMITTED', phase: 'precopy', sourceState: 'running' });
    expect(reported.rollbackErrors.map((e) => e.message)).toEqual(['thaw failed']);
    // Any other failure, or an abort for another reason (the agent stopping), is reported as it is.
    const other = new FerryError('PAGE_STREAM_FAILED');
    expect(permissionLostError(controller.signal, other)).toBe(other);
    const stopping = new AbortController();
    stopping.abort();
    expect(permissionLostError(stopping.signal, cancelled)).toBe(cancelled);
  });
});

describe('the dest allow-list', () => {
  const list = new DestAllowList(['10.0.0.2:7070', 'Dest-B.example:7070', '[::1]:7070']);

  it('lets through the dests on it, compared after normalizing', () => {
    expect(list.check('10.0.0.2:7070', 'Migrate')).toBe('10.0.0.2:7070');
    expect(list.check('dest-b.EXAMPLE:7070', 'Check')).toBe('dest-b.example:7070');
    expect(list.check('[::1]:7070', 'Check')).toBe('[::1]:7070');
  });

  it.each(['10.0.0.2:7071', '10.0.0.3:7070', '127.0.0.1:7070', 'dest-c.example:7070'])('refuses %s for Migrate and Check', (dest) => {
    expectFerryError(() => list.check(dest, 'Migrate'), 'DEST_NOT_ALLOWED');
    expectFerryError(() => list.check(dest, 'Check'), 'DEST_NOT_ALLOWED');
  });

  it('refuses everything when empty, and says how to allow a dest', () => {
    const e = expectFerryError(() => new DestAllowList([]).check('10.0.0.2:7070', 'Migrate'), 'DEST_NOT_ALLOWED');
    expect(e.hint).toMatch(/--allow-dest/);
  });

  it('does not echo an oversized dest back whole', () => {
    const e = expectFerryError(() => list.check('a'.repeat(100_000) + ':1', 'Check'), 'DEST_NOT_ALLOWED');
    expect(JSON.stringify(e.toJSON()).length).toBeLessThan(2_000);
  });

  it('refuses an entry that is not HOST:PORT when the agent starts', () => {
    expectFerryError(() => new DestAllowList(['10.0.0.2']), 'BAD_ADDRESS');
    expectFerryError(() => new DestAllowList(['10.0.0.2:0']), 'BAD_ADDRESS');
  });
});
