/**
 * The dest's sessions: the live ones by migration id, and the committed ones remembered for a while so that
 * a repeated Commit or Abort (after a lost reply) still gets the answer of the first. Subscribers hear every
 * transition of every session opened here. The live ones are bounded in all and per peer
 * (DEST_TOO_MANY_SESSIONS), and every call is checked against the session's epoch, the committed ones'
 * included (SESSION_EPOCH_MISMATCH, which never says what the epoch is).
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import type { PeerKey } from './peer-key.js';
import { PeerSlots } from './peer-slots.js';
import { DestSession, type DestSessionInit, type DestSessionListener, type DestSessionTransition } from './session.js';

/** Long enough for a source retrying a Commit whose reply was lost; then forgotten. */
const COMMITTED_MEMORY_MS = 10 * 60_000;

export interface CommittedSession {
  epoch: bigint;
  /** Who opened it: only that peer learns how it ended. */
  peer: PeerKey;
  restoredPid: number;
  resumedAtUs: bigint;
}

export interface SessionBounds {
  maxSessions: number;
  maxSessionsPerPeer: number;
}

const UNBOUNDED: SessionBounds = { maxSessions: Number.MAX_SAFE_INTEGER, maxSessionsPerPeer: Number.MAX_SAFE_INTEGER };

export class SessionRegistry {
  private readonly live = new Map<string, DestSession>();
  private readonly slots: PeerSlots;
  private readonly releases = new Map<DestSession, () => void>();
  private readonly committed = new Map<string, CommittedSession>();
  private readonly listeners = new Set<DestSessionListener>();

  constructor(
    private readonly committedMemoryMs = COMMITTED_MEMORY_MS,
    bounds: SessionBounds = UNBOUNDED,
  ) {
    this.slots = new PeerSlots('sessions', bounds.maxSessions, bounds.maxSessionsPerPeer, 'DEST_TOO_MANY_SESSIONS');
  }

  /** Hears every transition from now on; returns the unsubscribe. */
  subscribe(listener: DestSessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Creates a session's directories and adds it (its opening is announced); DEST_TOO_MANY_SESSIONS past a bound. */
  async open(init: Omit<DestSessionInit, 'onTransition'>): Promise<DestSession> {
    const release = this.slots.acquire(init.peer ?? 'local', 'prepare');
    try {
      const s = await DestSession.create({ ...init, onTransition: (t) => this.announce(t) });
      this.live.set(s.id, s);
      this.releases.set(s, release);
      return s;
    } catch (e) {
      release();
      throw e;
    }
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

  /** How a session that committed here ended, while it is remembered; SESSION_EPOCH_MISMATCH for another epoch. */
  committedSession(id: string, epoch: string, phase: Phase, peer: PeerKey): CommittedSession | undefined {
    const c = this.committed.get(id);
    if (!c || c.peer !== peer) return undefined;
    checkEpoch(c.epoch, epoch, phase);
    return c;
  }

  /** Whether this id committed here recently (a new Prepare of it is refused). */
  isCommitted(id: string): boolean {
    return this.committed.has(id);
  }

  /** A committed session leaves the live ones and is remembered for committedMemoryMs. */
  rememberCommitted(s: DestSession, outcome: Omit<CommittedSession, 'epoch' | 'peer'>): void {
    this.committed.set(s.id, { ...outcome, epoch: s.epoch, peer: s.peer });
    setTimeout(() => this.committed.delete(s.id), this.committedMemoryMs).unref();
    this.remove(s);
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

