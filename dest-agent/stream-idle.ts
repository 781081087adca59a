/**
 * The dest's bound on a stream's silence: each wait on the peer (its next message, or room to send it an ack)
 * ends with STREAM_IDLE_TIMEOUT after `idleMs`, and at once when the call itself ends (the peer cancelled,
 * or the transport broke it: grpc-js then never ends the message iterator). So a peer that opens streams and
 * goes quiet, stops reading acks, or walks away mid-batch frees its slot instead of holding it.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';

export class StreamIdle {
  private ended: FerryError | undefined;
  /**
   * The waits in progress, told when the call ends. Not a Promise.race against one long-lived "call ended"
   * promise: each race leaves a reaction on it that holds the race's result (the message) until the call
   * ends, so a page stream kept every batch it received alive: 1.2 GB of dest RSS at 1 GiB, which every fork
   * inside the freeze (the pager, criu restore) then paid for.
   */
  private readonly waiting = new Set<(e: FerryError) => void>();

  /** `call` is the stream's gRPC call: its 'cancelled', 'close' or 'error' ends every wait. */
  constructor(
    private readonly idleMs: number,
    private readonly phase: Phase,
    call: NodeJS.EventEmitter,
  ) {
    const end = (): void => {
      if (this.ended) return;
      this.ended = new FerryError('CANCELLED', { side: 'dest', phase, detail: 'the peer ended the stream' });
      for (const stop of this.waiting) stop(this.ended);
      this.waiting.clear();
    };
    call.once('cancelled', end);
    call.once('close', end);
    call.once('error', end);
  }

  /** `p`, or STREAM_IDLE_TIMEOUT if it has not settled within idleMs. */
  wait<T>(p: Promise<T>, waitingFor: string): Promise<T> {
    // Settling after the timeout (the call ended meanwhile) is no one's error any more.
    p.catch(() => undefined);
    if (this.ended) {
      // As a race: what had already settled still wins over the call's end (no reaction outlives this call now).
      const ended = Promise.reject(this.ended);
      ended.catch(() => undefined);
      return Promise.race([p, ended]);
    }
    return new Promise<T>((resolve, reject) => {
      const stop = (e: Error): void => {
        clearTimeout(timer);
        this.waiting.delete(stop);
        reject(e);
      };
      const timer = setTimeout(() => stop(new FerryError('STREAM_IDLE_TIMEOUT', { side: 'dest', phase: this.phase, detail: `no ${waitingFor} for ${this.idleMs} ms` })), this.idleMs);
      this.waiting.add(stop);
      p.then(
        (v) => {
          clearTimeout(timer);
          this.waiting.delete(stop);
          resolve(v);
        },
        (e: unknown) => stop(e instanceof Error ? e : new Error(String(e))),
      );
    });
  }

  /** The messages of `source`, each awaited under the bound. */
  async *messages<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
    const it = source[Symbol.asyncIterator]();
    for (;;) {
      const r = await this.wait(it.next(), 'message');
      if (r.done) return;
      yield r.value;
    }
  }

  /** Resolves on the stream's 'drain', under the bound. */
  drained(stream: NodeJS.EventEmitter): Promise<void> {
    let onDrain: (() => void) | undefined;
    const drained = new Promise<void>((resolve) => {
      onDrain = resolve;
      stream.once('drain', resolve);
    });
    return this.wait(drained, 'room for an ack (the peer reads none)').finally(() => stream.removeListener('drain', onDrain!));
  }
}
