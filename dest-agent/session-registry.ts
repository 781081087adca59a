/**
 * The dest's sessions: the live ones by migration id, and the ended ones (committed or aborted) remembered as
 * long as their journals are kept (dest-journal.ts), so that a repeated Commit or Abort (after a lost reply, a
 * crash of either side, a long cut) gets the answer the first decided. Subscribers hear every
 * transition of every session opened here. The live ones are bounded in all and per peer
 * (DEST_TOO_MANY_SESSIONS), and every call is checked against the session's epoch, the committed ones'
 * included (SESSION_EPOCH_MISMATCH, which never says what the epoch is).
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import type { PeerKey } from './peer-key.js';
import { PeerSlots } from './peer-slots.js';
import { MAX_ENDED_JOURNALS } from './dest-journal.js';
import { DestSession, type DestSessionInit, type DestSessionListener, type DestSessionTransition } from './session.js';

/** Aborts of ids never prepared here, remembered (the newest) so that their late Prepare is refused. */
const MAX_ABORTED_UNPREPARED = 1_000;

export type EndedSession =
  | { outcome: 'committed'; epoch: bigint; peer: PeerKey; restoredPid: number; resumedAtUs: bigint; fill?: Record<string, number> }
  | { outcome: 'aborted'; epoch: bigint; peer: PeerKey; reason: string };

export interface SessionBounds {
  maxSessions: number;
  maxSessionsPerPeer: number;
}

const UNBOUNDED: SessionBounds = { maxSessions: Number.MAX_SAFE_INTEGER, maxSessionsPerPeer: Number.MAX_SAFE_INTEGER };

export class SessionRegistry {
  private readonly live = new Map<string, DestSession>();
  private readonly slots: PeerSlots;
  private readonly releases = new Map<DestSession, () => void>();
  /** In insertion order, the oldest first: past the bound the oldest is forgotten. */
  private readonly ended = new Map<string, EndedSession>();
  private readonly abortedUnprepared = new Set<string>();
  private readonly listeners = new Set<DestSessionListener>();

  constructor(
    bounds: SessionBounds = UNBOUNDED,
    private readonly maxEnded = MAX_ENDED_JOURNALS,
  ) {
    this.slots = new PeerSlots('sessions', bounds.maxSessions, bounds.maxSessionsPerPeer, 'DEST_TOO_MANY_SESSIONS');
  }

  /** Hears every transition from now on; returns the unsubscribe. */
  subscribe(listener: DestSessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Creates a session's directories and adds it (its opening is announced); DEST_TOO_MANY_SESSIONS past a bound. */
  open(init: Omit<DestSessionInit, 'onTransition'>): Promise<DestSession> {
    return this.add(init.peer, 'prepare', (onTransition) => DestSession.create({ ...init, onTransition }));
  }

  /** Whether any peer has a live session with this id (a Prepare of another peer is then refused). */
  holds(id: string): boolean {
    return this.live.has(id);
  }

  /** The live session with this id, whatever its epoch, if `peer` opened it. */
  get(id: string, peer: PeerKey): DestSession | undefined {
    const s = this.live.get(id);
    return s?.peer === peer ? s : undefined;
  }

  /**
   * The live session with this id and epoch, touched (it is not idle): SESSION_NOT_FOUND without one,
   * SESSION_EPOCH_MISMATCH for another epoch. A session belongs to the peer that opened it: to any other,
   * even an allowed source that learned the id and the epoch, it does not exist.
   */
  lookup(id: string, epoch: string, phase: Phase, peer: PeerKey): DestSession {
    const s = this.live.get(id);
    if (!s || s.peer !== peer) throw new FerryError('SESSION_NOT_FOUND', { side: 'dest', phase, detail: `migration ${id}` });
    checkEpoch(s.epoch, epoch, phase);
    s.touch();
    return s;
  }

  /** How a session of this peer ended here, while it is remembered; SESSION_EPOCH_MISMATCH for another epoch. */
  endedSession(id: string, epoch: string, phase: Phase, peer: PeerKey): EndedSession | undefined {
    const c = this.ended.get(id);
    if (!c || c.peer !== peer) return undefined;
    checkEpoch(c.epoch, epoch, phase);
    return c;
  }

  /** Whether a session of this id ended here, or was aborted before it was prepared (a new Prepare is refused). */
  hasEnded(id: string): boolean {
    return this.ended.has(id) || this.abortedUnprepared.has(id);
  }

  /** Whether an Abort came for this id before it was prepared here. */
  wasAbortedUnprepared(id: string): boolean {
    return this.abortedUnprepared.has(id);
  }

  /**
   * An Abort for an id this dest does not hold: its Prepare may still be on its way (sent before the source gave
   * up), and must then be refused. Kept apart from the ended sessions, and bounded on its own, so that a flood
   * of such Aborts never pushes out how a real session ended.
   */
  rememberAbortedUnprepared(id: string): void {
    this.abortedUnprepared.delete(id);
    this.abortedUnprepared.add(id);
    for (const oldest of this.abortedUnprepared) {
      if (this.abortedUnprepared.size <= MAX_ABORTED_UNPREPARED) break;
      this.abortedUnprepared.delete(oldest);
    }
  }

  /** An ended session (live here, or found in a journal at start) is remembered; a live one leaves the live ones. */
  rememberEnded(id: string, outcome: EndedSession, live?: DestSession): void {
    this.ended.delete(id);
    this.ended.set(id, outcome);
    for (const oldest of this.ended.keys()) {
      if (this.ended.size <= this.maxEnded) break;
      this.ended.delete(oldest);
    }
    if (live) this.remove(live);
  }

  /** A restored session a previous agent left, taken over (its slot counted like any other). */
  revive(init: Omit<DestSessionInit, 'onTransition'> & { restoredPid: number; state: 'restored' | 'filling'; resumedAtUs?: bigint }): Promise<DestSession> {
    return this.add(init.peer, 'restore', (onTransition) => DestSession.revive({ ...init, onTransition }));
  }

  /** A session made by `make` becomes live, holding a slot of its peer's (given back if it cannot be made). */
  private async add(peer: PeerKey | undefined, phase: Phase, make: (onTransition: DestSessionListener) => Promise<DestSession>): Promise<DestSession> {
    const release = this.slots.acquire(peer ?? 'local', phase);
    try {
      const s = await make((t) => this.announce(t));
      this.live.set(s.id, s);
      this.releases.set(s, release);
      return s;
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Forgets a live session (aborted, or committed and remembered). Another session of the same id stays. */
  remove(s: DestSession): void {
    if (this.live.get(s.id) === s) this.live.delete(s.id);
    this.releases.get(s)?.();
    this.releases.delete(s);
  }

  /** The live sessions, as a copy: closing them removes them. */
  all(): DestSession[] {
    return [...this.live.values()];
  }

  private announce(t: DestSessionTransition): void {
    for (const listener of this.listeners) listener(t);
  }
}

/** The epoch is compared, never echoed: an error that showed it would hand it to whoever caused the error. */
function checkEpoch(expected: bigint, got: string, phase: Phase): void {
  let e: bigint;
  try {
    e = BigInt(got);
  } catch {
    e = -1n;
  }
  if (e !== expected) throw new FerryError('SESSION_EPOCH_MISMATCH', { side: 'dest', phase });
}

