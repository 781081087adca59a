/**
 * What this agent has forwarded to its pager during one fill (CONFIRM or REPLACE), one bit per manifest page:
 * the FillReady of each new Fill call (so that the source's sweep skips them after a broken call), and whether a
 * pager want is answered yet. In memory only: a restarted agent knows nothing and says nothing, and the source
 * then sends everything again (the pager ignores what it has).
 */
import type * as m from '../../shared/transport/messages.js';
import { bitAt } from '../../shared/pages/page-bitmap.js';
import type { FillBounds } from './fill-messages.js';
import type { PagerWant } from './pager-control.js';

function setBits(bits: Uint8Array, first: number, count: number): number {
  let fresh = 0;
  for (let i = first; i < first + count; i++) {
    const mask = 1 << (i & 7);
    if ((bits[i >>> 3]! & mask) === 0) {
      bits[i >>> 3]! |= mask;
      fresh++;
    }
  }
  return fresh;
}

export class ForwardedPages {
  /** Confirmed or replaced, per task. */
  private readonly sent = new Map<number, Uint8Array>();
  /** Replaced (bytes), per task: only these answer a want for bytes. */
  private readonly replaced = new Map<number, Uint8Array>();

  constructor(private readonly bounds: FillBounds) {}

  private bitsOf(map: Map<number, Uint8Array>, task: number): Uint8Array | undefined {
    let bits = map.get(task);
    if (!bits) {
      const pages = this.bounds.pages.get(task);
      if (pages === undefined) return undefined;
      bits = new Uint8Array(Math.ceil(pages / 8));
      map.set(task, bits);
    }
    return bits;
  }

  markConfirmed(task: number, first: number, count: number): void {
    const bits = this.bitsOf(this.sent, task);
    if (bits) setBits(bits, first, count);
  }

  /** Returns how many of the pages newly replaced are remote (the dest had no bytes of them). */
  markReplaced(task: number, first: number, count: number): number {
    const sent = this.bitsOf(this.sent, task);
    const replaced = this.bitsOf(this.replaced, task);
    if (!sent || !replaced) return 0;
    setBits(sent, first, count);
    const remote = this.bounds.remote?.get(task);
    let freshRemote = 0;
    for (let i = first; i < first + count; i++) {
      const mask = 1 << (i & 7);
      if ((replaced[i >>> 3]! & mask) !== 0) continue;
      replaced[i >>> 3]! |= mask;
      if (bitAt(remote, i)) freshRemote++;
    }
    return freshRemote;
  }

  /** Whether everything the want asks for went to the pager (for bytes: as bytes). */
  answers(w: PagerWant): boolean {
    const bits = (w.bytes ? this.replaced : this.sent).get(w.task);
    if (!bits) return false;
    for (let i = w.index; i < w.index + w.count; i++) if (!bitAt(bits, i)) return false;
    return true;
  }

  /** One FillReady per task with any page forwarded (bitmap of ceil(pages/8) bytes). */
  ready(): m.FillReady[] {
    const out: m.FillReady[] = [];
    for (const [task, bits] of this.sent) if (bits.some((b) => b !== 0)) out.push({ task, pages: Buffer.from(bits) });
    return out;
  }

  /** Forgets everything: frames may have been lost with a control connection. */
  clear(): void {
    this.sent.clear();
    this.replaced.clear();
  }
}
