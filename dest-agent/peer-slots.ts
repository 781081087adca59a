/** A bounded count of things open at once (streams), in all and per peer: acquire() refuses past either bound. */
import type { ErrorKey } from '../shared/errors/codes.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import type { PeerKey } from './peer-key.js';

export class PeerSlots {
  private total = 0;
  private readonly byPeer = new Map<PeerKey, number>();

  constructor(
    private readonly what: string,
    private readonly max: number,
    private readonly maxPerPeer: number,
    private readonly code: ErrorKey,
  ) {}

  /** Takes a slot for `peer`; returns its release (idempotent). */
  acquire(peer: PeerKey, phase: Phase): () => void {
    const mine = this.byPeer.get(peer) ?? 0;
    if (this.total >= this.max) throw new FerryError(this.code, { side: 'dest', phase, detail: `${this.total} ${this.what} open, the agent allows ${this.max}` });
    if (mine >= this.maxPerPeer) throw new FerryError(this.code, { side: 'dest', phase, detail: `${mine} ${this.what} open for this peer, the agent allows ${this.maxPerPeer}` });
    this.total++;
    this.byPeer.set(peer, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const left = (this.byPeer.get(peer) ?? 1) - 1;
      if (left === 0) this.byPeer.delete(peer);
      else this.byPeer.set(peer, left);
    };
  }

  get open(): number {
    return this.total;
  }
}
