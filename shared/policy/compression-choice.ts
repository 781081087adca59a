/**
 * --compress auto: whether the next batches of a round go compressed, from what was measured (pure). Compress
 * only when the link is the limit: per raw byte, sending it as it is costs 1 / link; compressed it costs
 * 1 / compressSpeed (the source's CPU, serial with the send in the worst case) + 1 / (ratio x link). On a fast
 * link (one faster than the compressor) the second is always the larger, so a fast link never compresses.
 * Hysteresis: switching on needs a clear gain, staying on a smaller one, so a link near the line does not flap.
 */

export type CompressMode = 'auto' | 'off' | 'zstd';
export type ChosenCodec = 'none' | 'zstd';

export interface CompressionEstimates {
  /** Wire bytes per second the link delivered while it was busy; undefined before the first acknowledgement. */
  linkBytesPerSecond: number | undefined;
  /** Raw bytes / compressed bytes of the batches compressed so far (probes included); undefined before one. */
  ratio: number | undefined;
  /** Raw bytes the source compresses per second; undefined before one batch was compressed. */
  compressBytesPerSecond: number | undefined;
}

export interface CompressionTuning {
  /** Turn compression on when sending compressed is at least this many times faster. */
  onGain: number;
  /** Keep it on while it is at least this many times faster. */
  offGain: number;
}

export const DEFAULT_COMPRESSION_TUNING: CompressionTuning = { onGain: 1.3, offGain: 1.1 };

export interface CompressionChoice {
  codec: ChosenCodec;
  /** Sending compressed / sending raw, per raw byte (undefined while not all estimates are known). */
  gain: number | undefined;
  reason: string;
}

/** The expected speed-up of compressing, or undefined while an estimate is missing. */
export function compressionGain(e: CompressionEstimates): number | undefined {
  const { linkBytesPerSecond: link, ratio, compressBytesPerSecond: speed } = e;
  if (link === undefined || ratio === undefined || speed === undefined || link <= 0 || ratio <= 0 || speed <= 0) return undefined;
  const raw = 1 / link;
  const compressed = 1 / speed + 1 / (ratio * link);
  return raw / compressed;
}

/**
 * The codec for the next batches. `current` is what the last ones used (hysteresis); `available` is false
 * when the dest (or this host) has no zstd: nothing compresses then, whatever the mode.
 */
export function chooseCompression(
  mode: CompressMode,
  available: boolean,
  current: ChosenCodec,
  e: CompressionEstimates,
  tuning: CompressionTuning = DEFAULT_COMPRESSION_TUNING,
): CompressionChoice {
  if (mode === 'off') return { codec: 'none', gain: undefined, reason: '--compress off' };
  if (!available) return { codec: 'none', gain: undefined, reason: 'no codec both agents speak' };
  if (mode === 'zstd') return { codec: 'zstd', gain: compressionGain(e), reason: '--compress zstd' };
  const gain = compressionGain(e);
  if (gain === undefined) return { codec: current, gain, reason: 'not measured yet' };
  const need = current === 'zstd' ? tuning.offGain : tuning.onGain;
  const fmt = (x: number): string => (x / 1e6).toFixed(1);
  const facts = `link ${fmt(e.linkBytesPerSecond!)} MB/s, ratio ${e.ratio!.toFixed(2)}, compress ${fmt(e.compressBytesPerSecond!)} MB/s: ${gain.toFixed(2)}x`;
  return gain >= need ? { codec: 'zstd', gain, reason: `the link is the limit (${facts})` } : { codec: 'none', gain, reason: `compressing would not pay (${facts})` };
}
