/**
 * The dest's bound on a stream's silence: each wait on the peer (its next message, or room to send it an ack)
 * ends with STREAM_IDLE_TIMEOUT after `idleMs`, and at once when the call itself ends (the peer cancelled,
 * or the transport broke it: grpc-js then never ends the message iterator). So a peer that opens streams and
 * goes quiet, stops reading acks, or walks away mid-batch frees its slot instead of holding it.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';

export class StreamIdle {
  private readonly callEnded: Promise<never>;

  /** `call` is the stream's gRPC call: its 'cancelled', 'close' or 'error' ends every wait. */
  constructor(
    private readonly idleMs: number,
    private readonly phase: Phase,
    call: NodeJS.EventEmitter,
  ) {
    this.callEnded = new Promise<never>((_, reject) => {
      const end = (): void => reject(new FerryError('CANCELLED', { side: 'dest', phase, detail: 'the peer ended the stream' }));
      call.once('cancelled', end);
      call.once('close', end);
      call.once('error', end);
    });
    this.callEnded.catch(() => undefined); // observed by every wait; nobody may be waiting when it ends
  }

  /** `p`, or STREAM_IDLE_TIMEOUT if it has not settled within idleMs. */
  wait<T>(p: Promise<T>, waitingFor: string): Promise<T> {
    // Settling after the timeout (the call ended meanwhile) is no one's error any more.
    p.catch(() => undefined);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new FerryError('STREAM_IDLE_TIMEOUT', { side: 'dest', phase: this.phase, detail: `no ${waitingFor} for ${this.idleMs} ms` })),
        this.idleMs,
      );
      Promise.race([p, this.callEnded]).then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
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
