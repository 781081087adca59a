/**
 * The source's seam for compression: whatever carries the batches (the gRPC page stream, a page channel)
 * asks encode() for each batch's payload, and reports each batch's wire bytes when it goes out (sent) and when
 * the dest acknowledges it (acked). From those this measures the link (wire bytes delivered per second while
 * something was in flight), the ratio and the compressor's speed, and re-decides the codec at every round's
 * start and every DECIDE_EVERY batches (shared/policy/compression-choice.ts). While it sends raw, every
 * PROBE_EVERY-th batch is compressed anyway (and sent compressed if that saves): the ratio stays known.
 */
import { BatchPayloadEncoder, type EncodedPayload, type PageCodecName } from '../../shared/pages/batch-codec.js';
import { chooseCompression, type ChosenCodec, type CompressionChoice, type CompressionEstimates, type CompressMode } from '../../shared/policy/compression-choice.js';

/** Batches between two decisions within a round (~16 MiB of 1 MiB batches). */
export const DECIDE_EVERY = 16;
/** While raw: one batch in this many is a probe. */
export const PROBE_EVERY = 32;
/** Weight of the newest window in the running estimates. */
const NEW_WEIGHT = 0.5;

/** What one round sent: raw page bytes, bytes on the wire, and the raw bytes that went compressed. */
export interface RoundCompression {
  rawBytes: number;
  wireBytes: number;
  compressedRawBytes: number;
}

export interface PageCompressionOptions {
  mode: CompressMode;
  /** The compressing codecs both agents speak (Negotiate); empty: none. */
  codecs: readonly PageCodecName[];
  level?: number | undefined;
  /** A cap on pre-copy traffic (--bandwidth) is a link too: the estimate is never above it. */
  capBytesPerSecond?: number | undefined;
  /** Each decision that changes the codec (the migration's log). */
  onChange?: (round: number, choice: CompressionChoice) => void;
}

function blend(old: number | undefined, sample: number): number {
  return old === undefined ? sample : old * (1 - NEW_WEIGHT) + sample * NEW_WEIGHT;
}

export class PageCompression {
  private readonly encoder: BatchPayloadEncoder;
  private codec: ChosenCodec;
  private round = -1;
  private batches = 0;
  private readonly estimates: CompressionEstimates = { linkBytesPerSecond: undefined, ratio: undefined, compressBytesPerSecond: undefined };
  // The delivery meter: busy from the first unacknowledged batch to the last acknowledgement.
  private inflight = 0;
  private busySince = 0;
  private busyMs = 0;
  private ackedWire = 0;
  // The compressor's window since the last decision.
  private probeRaw = 0;
  private probeFrame = 0;
  private probeMs = 0;
  readonly rounds = new Map<number, RoundCompression>();
  rawBytes = 0;
  wireBytes = 0;

  constructor(private readonly opts: PageCompressionOptions) {
    this.encoder = new BatchPayloadEncoder(opts.level ?? 1);
    this.codec = this.available && opts.mode === 'zstd' ? 'zstd' : 'none';
  }

  private get available(): boolean {
    return this.opts.codecs.includes('zstd');
  }

  /** The codec the last decision chose. */
  get current(): ChosenCodec {
    return this.codec;
  }

  /** Running estimates (a copy), for tests and the log. */
  get measured(): CompressionEstimates {
    return { ...this.estimates };
  }

  /** The payload of the next batch of `round` (a view valid until the next encode). */
  encode(round: number, data: Buffer): EncodedPayload {
    if (round !== this.round || this.batches % DECIDE_EVERY === 0) this.decide(round);
    this.round = round;
    const probe = this.opts.mode === 'auto' && this.available && this.codec === 'none' && (this.estimates.ratio === undefined || this.batches % PROBE_EVERY === 0);
    this.batches++;
    const e = this.encoder.encode(data, this.codec === 'zstd' || probe ? 'zstd' : 'none');
    if (e.frameBytes !== undefined) {
      this.probeRaw += data.length;
      this.probeFrame += e.frameBytes;
      this.probeMs += e.compressMs;
    }
    let r = this.rounds.get(round);
    if (!r) this.rounds.set(round, (r = { rawBytes: 0, wireBytes: 0, compressedRawBytes: 0 }));
    r.rawBytes += data.length;
    r.wireBytes += e.payload.length;
    if (e.codec !== 'none') r.compressedRawBytes += data.length;
    this.rawBytes += data.length;
    this.wireBytes += e.payload.length;
    return e;
  }

  /** A batch went out. */
  sent(): void {
    if (this.inflight++ === 0) this.busySince = performance.now();
  }

  /** The dest acknowledged a batch of `wireBytes` (its payload and page entries; acks come in order). */
  acked(wireBytes: number): void {
    this.ackedWire += wireBytes;
    if (--this.inflight === 0) this.busyMs += performance.now() - this.busySince;
  }

  /** The codec a round mostly went with: zstd when more than half its raw bytes went compressed. */
  roundCodec(round: number): ChosenCodec {
    const r = this.rounds.get(round);
    return r && r.compressedRawBytes * 2 > r.rawBytes ? 'zstd' : 'none';
  }

  private decide(round: number): void {
    this.updateEstimates();
    const choice = chooseCompression(this.opts.mode, this.available, this.codec, this.estimates);
    if (choice.codec !== this.codec) this.opts.onChange?.(round, choice);
    this.codec = choice.codec;
  }

  private updateEstimates(): void {
    const busy = this.busyMs + (this.inflight > 0 ? performance.now() - this.busySince : 0);
    // A window of a few ms says more about timer resolution than about the link.
    if (this.ackedWire > 0 && busy >= 5) {
      this.estimates.linkBytesPerSecond = blend(this.estimates.linkBytesPerSecond, (this.ackedWire * 1000) / busy);
      this.ackedWire = 0;
      this.busyMs = 0;
      if (this.inflight > 0) this.busySince = performance.now();
    }
    const cap = this.opts.capBytesPerSecond;
    if (cap !== undefined) this.estimates.linkBytesPerSecond = Math.min(this.estimates.linkBytesPerSecond ?? cap, cap);
    if (this.probeFrame > 0) {
      this.estimates.ratio = blend(this.estimates.ratio, this.probeRaw / this.probeFrame);
      if (this.probeMs > 0) this.estimates.compressBytesPerSecond = blend(this.estimates.compressBytesPerSecond, (this.probeRaw * 1000) / this.probeMs);
      this.probeRaw = this.probeFrame = this.probeMs = 0;
    }
  }
}
