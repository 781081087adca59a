/** A fake 16-byte page hash that names its page and version: two versions always differ (nothing here checks hashes). */
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';

export function fakeHash(page: number, version = 0): Buffer {
  const h = Buffer.alloc(HASH_BYTES);
  h.writeDoubleLE(page, 0);
  h.writeUInt32LE(version, 8);
  h.writeUInt32LE(0xfeedbeef, 12);
  return h;
}
