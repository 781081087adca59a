/**
 * --bandwidth: a token bucket in front of the pre-copy page stream, so a migration does not starve the
 * host's other traffic. Tokens are bytes; the bucket holds at most `burstBytes` (about 100 ms of rate, at
 * least one batch), so the long-run rate stays at the cap while single batches still go out whole.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();

  constructor(
    readonly bytesPerSecond: number,
    readonly burstBytes: number = Math.max(1.25 * 1024 * 1024, bytesPerSecond / 10),
  ) {
    this.tokens = burstBytes;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.last) * this.bytesPerSecond) / 1000);
    this.last = now;
  }

  /** Waits until `bytes` may be sent, then takes them (the balance may go negative for one oversized batch). */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    this.refill();
    while (this.tokens < Math.min(bytes, this.burstBytes)) {
      signal?.throwIfAborted();
      const waitMs = ((Math.min(bytes, this.burstBytes) - this.tokens) * 1000) / this.bytesPerSecond;
      await sleep(Math.max(1, Math.ceil(waitMs)), signal);
      this.refill();
    }
    this.tokens -= bytes;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
