/**
 * The dest session's state table (every legal move accepted and announced, every other refused with its
 * code) and the session registry (lookup by id and epoch, the committed sessions remembered for a while).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DestSession, type DestSessionState, type DestSessionTransition } from '../../dest-agent/session.js';
import { SessionRegistry } from '../../dest-agent/session-registry.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const STATES: readonly DestSessionState[] = ['receiving', 'restoring', 'restored', 'filling', 'committed', 'aborted'];
const LEGAL = new Set([
  'receiving>restoring',
  'restoring>restored',
  'restored>committed',
  'restored>filling',
  'filling>committed',
  'filling>aborted',
  'receiving>aborted',
  'restoring>aborted',
  'restored>aborted',
]);
/** The legal moves that lead from a new session to each state. */
const PATH_TO: Readonly<Record<DestSessionState, readonly DestSessionState[]>> = {
  receiving: [],
  restoring: ['restoring'],
  restored: ['restoring', 'restored'],
  filling: ['restoring', 'restored', 'filling'],
  committed: ['restoring', 'restored', 'committed'],
  aborted: ['aborted'],
};

let workDir: string;
beforeEach(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'ferry-unit-session-'));
});
afterEach(async () => {
  await rm(workDir, { recursive: true, force: true });
});

async function sessionIn(state: DestSessionState, heard: DestSessionTransition[] = []): Promise<DestSession> {
  const s = await DestSession.create({ workDir, id: `sess-${state}`, epoch: 1n, pageSize: 4096, log: silentLogger, onTransition: (t) => heard.push(t) });
  for (const to of PATH_TO[state]) await s.transition(to);
  return s;
}

describe('dest session transitions', () => {
  it('announces the opening in receiving', async () => {
    const heard: DestSessionTransition[] = [];
    const s = await DestSession.create({ workDir, id: 'sess-open', epoch: 1n, pageSize: 4096, log: silentLogger, onTransition: (t) => heard.push(t), fields: { task: 'x' } });
    expect(s.state).toBe('receiving');
    expect(heard).toEqual([{ session: s, from: undefined, to: 'receiving', fields: { task: 'x' } }]);
    expect(existsSync(s.imagesDir) && existsSync(s.storeDir)).toBe(true);
  });

  for (const from of STATES) {
    for (const to of STATES) {
      const legal = LEGAL.has(`${from}>${to}`);
      it(`${legal ? 'accepts' : 'refuses'} ${from} -> ${to}`, async () => {
        const heard: DestSessionTransition[] = [];
        const s = await sessionIn(from, heard);
        heard.length = 0;
        if (legal) {
          await s.transition(to, { reason: 'test' });
          expect(s.state).toBe(to);
          expect(heard).toEqual([{ session: s, from, to, fields: { reason: 'test' } }]);
        } else {
          const e = expectFerryError(() => s.transition(to), 'SESSION_CONFLICT');
          expect(e.side).toBe('dest');
          expect(s.state).toBe(from);
          expect(heard).toEqual([]);
        }
      });
    }
  }

  it('expect() passes in the named state and refuses any other with SESSION_CONFLICT or the code given', async () => {
    const s = await sessionIn('restoring');
    s.expect('restoring', 'restore');
    const e = expectFerryError(() => s.expect('receiving', 'precopy'), 'SESSION_CONFLICT');
    expect(e).toMatchObject({ side: 'dest', phase: 'precopy', detail: 'session is restoring' });
    expect(expectFerryError(() => s.expect('restored', 'commit', 'COMMIT_REJECTED'), 'COMMIT_REJECTED').phase).toBe('commit');
  });
});

describe('session registry', () => {
  const open = (r: SessionRegistry, id: string, epoch = 1n): Promise<DestSession> => r.open({ workDir, id, epoch, pageSize: 4096, log: silentLogger });

  it('finds a session by id and epoch, refusing an unknown id and another epoch', async () => {
    const r = new SessionRegistry();
    const s = await open(r, 'sess-lookup', 987654321n);
    expect(r.get('sess-lookup', 'local')).toBe(s);
    expect(r.lookup('sess-lookup', '987654321', 'precopy', 'local')).toBe(s);
    expect(expectFerryError(() => r.lookup('sess-other', '987654321', 'restore', 'local'), 'SESSION_NOT_FOUND').phase).toBe('restore');
    const wrong = expectFerryError(() => r.lookup('sess-lookup', '4', 'commit', 'local'), 'SESSION_EPOCH_MISMATCH');
    expect(wrong.phase).toBe('commit');
    expect(JSON.stringify(wrong.toJSON())).not.toContain('987654321'); // the session's epoch is never told
    // Another peer, even one that knows the id and the epoch, finds nothing: the session is its opener's.
    expect(r.get('sess-lookup', 'tls:spiffe://td/ferry/intruder')).toBeUndefined();
    expectFerryError(() => r.lookup('sess-lookup', '987654321', 'commit', 'tls:spiffe://td/ferry/intruder'), 'SESSION_NOT_FOUND');
    expect(r.holds('sess-lookup')).toBe(true);
    r.remove(s);
    expect(r.get('sess-lookup', 'local')).toBeUndefined();
    expectFerryError(() => r.lookup('sess-lookup', '987654321', 'precopy', 'local'), 'SESSION_NOT_FOUND');
  });

  it('tells every subscriber of every transition until it unsubscribes', async () => {
    const r = new SessionRegistry();
    const a: string[] = [];
    const b: string[] = [];
    r.subscribe((t) => a.push(`${t.session.id}:${t.to}`));
    const stop = r.subscribe((t) => b.push(`${t.session.id}:${t.to}`));
    const s = await open(r, 'sess-heard');
    await s.transition('restoring');
    stop();
    await s.transition('aborted');
    expect(a).toEqual(['sess-heard:receiving', 'sess-heard:restoring', 'sess-heard:aborted']);
    expect(b).toEqual(['sess-heard:receiving', 'sess-heard:restoring']);
  });

  it('remembers an ended session apart from the live ones, its own peer and epoch only, the newest up to a bound', async () => {
    const r = new SessionRegistry(undefined, 2);
    const s = await open(r, 'sess-done');
    const committed = { outcome: 'committed', epoch: 1n, peer: 'local', restoredPid: 42, resumedAtUs: 7n } as const;
    r.rememberEnded(s.id, committed, s);
    expect(r.get('sess-done', 'local')).toBeUndefined();
    expect(r.all()).toEqual([]);
    expect(r.endedSession('sess-done', '1', 'commit', 'local')).toEqual(committed);
    expect(r.endedSession('sess-done', '1', 'commit', '10.77.0.9')).toBeUndefined(); // nor another peer's
    // An ended session is still its epoch's alone: another gets no answer, nor the epoch.
    const e = expectFerryError(() => r.endedSession('sess-done', '2', 'rollback', 'local'), 'SESSION_EPOCH_MISMATCH');
    expect(e.detail ?? '').not.toContain('1');
    r.rememberEnded('sess-gone-1', { outcome: 'aborted', epoch: 3n, peer: 'local', reason: 'x' });
    r.rememberEnded('sess-gone-2', { outcome: 'aborted', epoch: 4n, peer: 'local', reason: 'y' });
    expect(r.hasEnded('sess-done')).toBe(false); // the oldest, past the bound of 2
    expect(r.endedSession('sess-gone-2', '4', 'commit', 'local')).toMatchObject({ outcome: 'aborted', reason: 'y' });
  });

  it('removing an old session leaves a new one of the same id in place', async () => {
    const r = new SessionRegistry();
    const old = await open(r, 'sess-again');
    await old.transition('aborted'); // its journal is let go with its end
    r.remove(old);
    const again = await open(r, 'sess-again', 2n);
    r.remove(old);
    expect(r.get('sess-again', 'local')).toBe(again);
    expect(r.all()).toEqual([again]);
  });
});
