/**
 * The sockets of a task's network namespace as /proc/PID/net/{tcp,tcp6,udp,udp6} list them, with the local
 * address in printable form: the preflight compares bound addresses with the dest's. The kernel prints an
 * IPv4 address as one 32-bit word and an IPv6 address as four, each in host byte order.
 */
import { endianness } from 'node:os';
import { parseProcNetTcp } from './task-criu-needs.js';

export type SocketTable = 'tcp' | 'tcp6' | 'udp' | 'udp6';
export const SOCKET_TABLES: readonly SocketTable[] = ['tcp', 'tcp6', 'udp', 'udp6'];

export interface NetSocket {
  table: SocketTable;
  inode: number;
  /** Printable local address: 10.0.0.1, ::1, fe80::1. */
  localIp: string;
  localPort: number;
  /** The kernel's state number (10 LISTEN, 1 ESTABLISHED, 7 CLOSE: an unconnected UDP socket). */
  state: number;
}

/** One 32-bit word of /proc/net/*'s hex, as the 4 bytes in memory order. */
function wordBytes(hex8: string, littleEndian: boolean): number[] {
  const b = [0, 2, 4, 6].map((i) => parseInt(hex8.slice(i, i + 2), 16));
  return littleEndian ? b.reverse() : b;
}

/** "0100007F" -> 127.0.0.1; 32 hex digits -> IPv6 in its compressed form. Undefined for malformed text. */
export function procNetIp(hex: string, littleEndian = endianness() === 'LE'): string | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < hex.length; i += 8) bytes.push(...wordBytes(hex.slice(i, i + 8), littleEndian));
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return `::ffff:${bytes.slice(12).join('.')}`;
  return compressIpv6(groups);
}

/** RFC 5952: the longest run (at least two) of zero groups becomes "::". */
function compressIpv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Parses one table's text; rows with a malformed address are skipped. */
export function parseNetSockets(table: SocketTable, text: string): NetSocket[] {
  const out: NetSocket[] = [];
  for (const e of parseProcNetTcp(text)) {
    const [ipHex = '', portHex = ''] = e.local.split(':');
    const localIp = procNetIp(ipHex);
    if (localIp === undefined) continue;
    out.push({ table, inode: e.inode, localIp, localPort: parseInt(portHex, 16), state: e.state });
  }
  return out;
}

/** Any address (0.0.0.0, ::): the socket binds to whatever the host has. */
export function isWildcardIp(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

/** Loopback exists in every network namespace. */
export function isLoopbackIp(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip.startsWith('::ffff:127.');
}
