/**
 * Text from outside (a peer's names, ids, reasons; an error's detail) is cut before it is echoed: an error
 * trailer or a log line must never carry a megabyte a peer chose. HTTP/2 refuses a header block beyond
 * 64 KiB, and a trailer that cannot be sent hangs the call and the connection behind it.
 */

/** What error details and logged strings are cut to. */
export const MAX_DETAIL_BYTES = 1024;

/**
 * `s` when it fits in `maxBytes` of UTF-8, else its head (cut on a character boundary) and how much was left
 * out. The result never exceeds `maxBytes` plus the short note.
 */
export function truncateText(s: string, maxBytes = MAX_DETAIL_BYTES): string {
  if (s.length <= maxBytes / 3 || Buffer.byteLength(s) <= maxBytes) return s;
  let head = s.slice(0, maxBytes);
  while (Buffer.byteLength(head) > maxBytes) head = head.slice(0, Math.floor(head.length * 0.9));
  // Never end on half of a surrogate pair.
  if (/[\uD800-\uDBFF]$/.test(head)) head = head.slice(0, -1);
  return `${head}... (${s.length - head.length} more characters)`;
}
