/**
 * Where a batch's page bytes are encoded (source) and decoded (dest): the one seam compression plugs into.
 * Today only CODEC_NONE exists. The dest checks the decoded length against the frame's raw length, which the
 * page layout then checks against the kinds (decodePageBatch): nothing larger than pages x page size is made.
 */
import { CODEC_NONE, invalidFrame } from './page-channel-frame.js';

export interface EncodedPayload {
  codec: number;
  payload: Buffer;
}

/** The bytes to send for `raw` (the batch's data); the caller keeps `raw` alive until it is written. */
export function encodePayload(raw: Buffer): EncodedPayload {
  return { codec: CODEC_NONE, payload: raw };
}

/** The raw page bytes of a received payload, at most `rawBytes` of them; PAGE_CHANNEL_FRAME_INVALID otherwise. */
export function decodePayload(codec: number, payload: Buffer, rawBytes: number): Buffer {
  if (codec !== CODEC_NONE) throw invalidFrame(`codec ${codec} is not accepted here`);
  if (payload.length !== rawBytes) throw invalidFrame(`${payload.length} payload bytes for ${rawBytes} raw bytes without a codec`);
  return payload;
}
