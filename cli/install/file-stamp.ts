/**
 * The first line install-service writes into each file: the hash of the rest. A file whose rest still has that
 * hash is Ferry's as written (an upgrade may replace it); any other is the operator's (dpkg's conffiles draw the
 * same line by keeping the installed file's hash).
 */
import { createHash } from 'node:crypto';

const STAMP = /^# Written by ferry install-service \S+ from \S+ \(sha256 ([0-9a-f]{64}) of what follows\)\.\n/;

export function contentHash(body: string): string {
  return createHash('sha256').update(body).digest('hex');
}

/** Is `content` exactly as install-service wrote it (its stamp matches the rest)? */
export function isUnedited(content: string): boolean {
  const m = STAMP.exec(content);
  return !!m && contentHash(content.slice(m[0].length)) === m[1];
}
