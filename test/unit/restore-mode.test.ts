/** --restore against the dest's features (restore-mode.ts): the table negotiate and `ferry check` share (issue 11). */
import { describe, expect, it } from 'vitest';
import type { PeerInfo } from '../../shared/transport/messages.js';
import { chooseRestoreMode, restoreModesOf } from '../../source-agent/migration/restore-mode.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const dest = (features: string[]): PeerInfo => ({
  ferryVersion: 't',
  protocolVersions: [1],
  pageSize: 4096,
  arch: 'x64',
  kernel: 'k',
  hostname: 'b',
  trackers: [],
  criuVersion: '4.2.1',
  criuProblem: '',
  features: ['page-hash-xxh3-128', 'zero-page-flag', ...features],
});

describe('restore mode', () => {
  it.each([
    ['auto', ['lazy-restore'], 'lazy'],
    ['auto', [], 'eager'],
    ['lazy', ['lazy-restore'], 'lazy'],
    ['eager', ['lazy-restore'], 'eager'],
    ['eager', [], 'eager'],
  ] as const)('%s to a dest with [%s] restores %s', (choice, features, mode) => {
    expect(chooseRestoreMode(choice, dest([...features])).mode).toBe(mode);
  });

  it('lazy to a dest without lazy-restore is RESTORE_MODE_UNSUPPORTED, with the reason; auto says why it fell back', () => {
    const e = expectFerryError(() => chooseRestoreMode('lazy', dest([])), 'RESTORE_MODE_UNSUPPORTED');
    expect(e.sourceState).toBe('running');
    expect(e.detail).toContain('uffd-noncoop');
    expect(chooseRestoreMode('auto', dest([])).note).toContain('does not offer lazy-restore');
  });

  it('ferry check lists both modes, with why lazy is not there', () => {
    expect(restoreModesOf(dest(['lazy-restore'])).map((x) => [x.mode, x.ok])).toEqual([['lazy', true], ['eager', true]]);
    const [lazy] = restoreModesOf(dest([]));
    expect(lazy).toMatchObject({ mode: 'lazy', ok: false });
    expect(lazy!.reason).toContain('pager');
  });
});
