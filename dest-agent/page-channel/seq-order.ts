/**
 * A stream's batches are numbered 1, 2, 3, ... across all its channels; the dest stores them in that order,
 * as one gRPC stream would have delivered them: a task's store keeps address order within a round, and a page
 * of round r+1 never lands before its round r copy. A channel whose next batch is not due waits (it stops
 * reading; the source's window bounds how far ahead any channel can be).
 */
import { FerryError } from '../../shared/errors/ferry-error.js';

export class SeqOrder {
  private next = 1n;
  /** The due batch being stored: another channel bringing the same seq meanwhile is refused, not stored twice. */
  private taken: bigint | undefined;
  private readonly waiting = new Map<bigint, { resolve: () => void; reject: (e: Error) => void }>();
  private closed: FerryError | undefined;

  /** Resolves when `seq` is the next to store; rejects on a seq already stored or taken, or once closed. */
  turn(seq: bigint, signal: AbortSignal): Promise<void> {
    if (this.closed) return Promise.reject(this.closed);
    if (seq < this.next || seq === this.taken || this.waiting.has(seq)) return Promise.reject(new FerryError('PAGE_SEQ_OUT_OF_ORDER', { side: 'dest', phase: 'precopy', detail: `batch ${seq} again (next is ${this.next})` }));
    if (seq === this.next) {
      this.taken = seq;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiting.delete(seq);
        reject(signal.reason instanceof Error ? signal.reason : new FerryError('CANCELLED', { side: 'dest', phase: 'precopy' }));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(seq, {
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          this.taken = seq;
          resolve();
        },
        reject: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
    });
  }

  /** `seq` is stored (or failed: its channel and session end anyway): the next one may go. */
  done(seq: bigint): void {
    if (seq !== this.next) return;
    this.next = seq + 1n;
    this.taken = undefined;
    const w = this.waiting.get(this.next);
    this.waiting.delete(this.next);
    w?.resolve();
  }

  close(e: FerryError): void {
    this.closed ??= e;
    for (const w of this.waiting.values()) w.reject(this.closed);
    this.waiting.clear();
  }
}
