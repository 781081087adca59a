/**
 * The waits of a page stream (grpc-page-stream.ts, page-channel/page-channel-stream.ts): send() and flush()
 * wait for a condition (room in the window, every ack) that the stream's events change; the first failure
 * wins and ends every wait.
 */
import type { FerryError } from '../shared/errors/ferry-error.js';
import type { PageCodecName } from '../shared/pages/batch-codec.js';
import { PAGE_ENTRY_BYTES, type PageBatch } from '../shared/transport/page-batch.js';
import type { PageStreamOptions } from './page-stream-options.js';
import type { PageCompression } from './pages/page-compression.js';

export class StreamWaits {
  private wake: (() => void) | undefined;
  private first: FerryError | undefined;

  /** `onFailed` runs once, at the first failure (e.g. to close the sockets). */
  constructor(private readonly onFailed: () => void = () => undefined) {}

  get failure(): FerryError | undefined {
    return this.first;
  }

  fail(e: FerryError): void {
    if (!this.first) {
      this.first = e;
      this.onFailed();
    }
    this.poke();
  }

  throwIfFailed(): void {
    if (this.first) throw this.first;
  }

  /** Something changed: the wait in progress looks at its condition again. */
  poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async until(cond: () => boolean): Promise<void> {
    while (!cond()) {
      this.throwIfFailed();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    this.throwIfFailed();
  }

  /**
   * A batch's way into the window: its wire cost (its payload as sent, compressed or not, and its page entries)
   * once the token bucket (pre-copy only) and the window (`windowBytes` unacknowledged, or nothing in flight)
   * let it go.
   */
  async admit(pages: number, payloadBytes: number, opts: PageStreamOptions, inflightBytes: () => number): Promise<number> {
    this.throwIfFailed();
    const cost = payloadBytes + pages * PAGE_ENTRY_BYTES;
    if (opts.bandwidth && opts.phase() === 'precopy') await opts.bandwidth.take(cost, opts.signal);
    await this.until(() => inflightBytes() === 0 || inflightBytes() + cost <= opts.windowBytes);
    return cost;
  }
}

/**
 * The payload a batch goes out with: `compression` encodes it (--compress). The encoder's buffer is reused at its
 * next batch and a socket may hold a chunk past write(), so compressed bytes are copied (a fifth of the raw on
 * heap-like pages); raw bytes go as they are.
 */
export function batchPayload(round: number, batch: PageBatch, compression: PageCompression | undefined): { codec: PageCodecName; payload: Buffer } {
  const encoded = compression?.encode(round, batch.data);
  return encoded && encoded.codec !== 'none' ? { codec: encoded.codec, payload: Buffer.from(encoded.payload) } : { codec: 'none', payload: batch.data };
}
