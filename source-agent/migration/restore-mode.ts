/**
 * How the dest restores: 'eager' (criu writes every page before the copy can run) or 'lazy' (the dest's pager
 * fills the pages after the resume, faulted pages first, each confirmed against the frozen original). Only the
 * dest decides whether lazy works (its pager, its kernel's userfaultfd): a lazy restore takes full dumps too.
 * Pure, so negotiate and `ferry check` give the same answer.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { LAZY_RESTORE_FEATURE } from '../../shared/peer-info.js';
import type { PeerInfo } from '../../shared/transport/messages.js';

export type RestoreChoice = 'auto' | 'lazy' | 'eager';
export type RestoreMode = 'lazy' | 'eager';

export interface RestoreModeSupport {
  mode: RestoreMode;
  ok: boolean;
  reason: string;
}

const NO_LAZY = 'the dest does not offer lazy-restore: it lacks the pager binary (build it with `npm ci`) or its kernel lacks userfaultfd with non-cooperative events (`criu check --feature uffd-noncoop`)';

/** What the dest can do, for `ferry check`. */
export function restoreModesOf(dest: PeerInfo): RestoreModeSupport[] {
  const lazy = dest.features.includes(LAZY_RESTORE_FEATURE);
  return [
    { mode: 'lazy', ok: lazy, reason: lazy ? 'the dest pages the copy in after the resume (userfaultfd pager)' : dest.lazyRestoreProblem?.slice(0, 500) || NO_LAZY },
    { mode: 'eager', ok: true, reason: 'criu restores every page before the resume' },
  ];
}

/** Resolves --restore against the dest's features; RESTORE_MODE_UNSUPPORTED for lazy to a dest without it. */
export function chooseRestoreMode(choice: RestoreChoice, dest: PeerInfo): { mode: RestoreMode; note: string } {
  const lazy = restoreModesOf(dest)[0]!;
  if (choice === 'eager') return { mode: 'eager', note: 'eager restore (as asked)' };
  if (lazy.ok) return { mode: 'lazy', note: choice === 'lazy' ? 'lazy restore (as asked)' : 'lazy restore (the dest offers it)' };
  if (choice === 'lazy') throw new FerryError('RESTORE_MODE_UNSUPPORTED', { phase: 'negotiate', side: 'dest', sourceState: 'running', detail: `dest ${dest.hostname}: ${lazy.reason}` });
  return { mode: 'eager', note: `eager restore (${lazy.reason})` };
}

/** Post-copy is a lazy restore: POSTCOPY_UNSUPPORTED (before anything is touched) to a dest that cannot do one. */
export function requirePostCopySupport(dest: PeerInfo): void {
  const lazy = restoreModesOf(dest)[0]!;
  if (!lazy.ok) throw new FerryError('POSTCOPY_UNSUPPORTED', { phase: 'negotiate', side: 'dest', sourceState: 'running', detail: `dest ${dest.hostname}: ${lazy.reason}` });
}

export function restoreChoice(v: string | undefined): RestoreChoice {
  if (v === undefined) return 'auto';
  if (v === 'auto' || v === 'lazy' || v === 'eager') return v;
  throw new FerryError('BAD_ARGUMENT', { message: `--restore must be auto, lazy or eager (got "${v}")`, hint: 'auto restores lazily where the dest can, else eagerly.' });
}
