/**
 * The dest's sessions: the live ones by migration id, and the committed ones remembered for a while so that
 * a repeated Commit or Abort (after a lost reply) still gets the answer of the first. Subscribers hear every
 * transition of every session opened here.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import { DestSession, type DestSessionInit, type DestSessionListener, type DestSessionTransition } from './session.js';

/** Long enough for a source retrying a Commit whose reply was lost; then forgotten. */
const COMMITTED_MEMORY_MS = 10 * 60_000;

export interface CommittedSession {
  restoredPid: number;
  resumedAtUs: bigint;
}

export class SessionRegistry {
  private readonly live = new Map<string, DestSession>();
  private readonly committed = new Map<string, CommittedSession>();
  private readonly listeners = new Set<DestSessionListener>();

  constructor(private readonly committedMemoryMs = COMMITTED_MEMORY_MS) {}

  /** Hears every transition from now on; returns the unsubscribe. */
  subscribe(listener: DestSessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Creates a session's directories and adds it (its opening is announced). */
  async open(init: Omit<DestSessionInit, 'onTransition'>): Promise<DestSession> {
    const s = await DestSession.create({ ...init, onTransition: (t) => this.announce(t) });
    this.live.set(s.id, s);
    return s;
  }

  /** The live session with this id, whatever its epoch. */
  get(id: string): DestSession | undefined {
    return this.live.get(id);
  }

  /** The live session with this id and epoch: SESSION_NOT_FOUND without one, SESSION_CONFLICT for another epoch. */
  lookup(id: string, epoch: string, phase: Phase): DestSession {
    const s = this.live.get(id);
    if (!s) throw new FerryError('SESSION_NOT_FOUND', { side: 'dest', phase, detail: `migration ${id}` });
    if (s.epoch !== BigInt(epoch)) throw new FerryError('SESSION_CONFLICT', { side: 'dest', phase, detail: `epoch ${epoch} is not ${s.epoch}` });
    return s;
  }

  /** How a session that committed here ended, while it is remembered. */
  committedSession(id: string): CommittedSession | undefined {
    return this.committed.get(id);
  }

  /** A committed session leaves the live ones and is remembered for committedMemoryMs. */
  rememberCommitted(s: DestSession, outcome: CommittedSession): void {
    this.committed.set(s.id, outcome);
    setTimeout(() => this.committed.delete(s.id), this.committedMemoryMs).unref();
    this.remove(s);
  }

  /** Forgets a live session (aborted, or committed and remembered). Another session of the same id stays. */
  remove(s: DestSession): void {
    if (this.live.get(s.id) === s) this.live.delete(s.id);
  }

  /** The live sessions, as a copy: closing them removes them. */
  all(): DestSession[] {
    return [...this.live.values()];
  }

  private announce(t: DestSessionTransition): void {
    for (const listener of this.listeners) listener(t);
  }
}
