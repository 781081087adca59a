/**
 * Ethernet (MAC) addresses: aa:bb:cc:dd:ee:ff, lower case, as a TaskNetwork carries them. A task's MAC must be
 * unicast (it is a station's own); a random one is also locally administered, so that it never collides with
 * a vendor's.
 */
import { randomBytes } from 'node:crypto';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** What is wrong with `text` as a station's MAC, or undefined. Upper-case hex is accepted (normalizeMac). */
export function macProblem(text: string): string | undefined {
  const mac = text.toLowerCase();
  if (!MAC.test(mac)) return `${text.slice(0, 40)} is not a MAC (six hex octets joined by ':')`;
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) return `${mac} is a multicast MAC, not a station's`;
  if (mac === '00:00:00:00:00:00') return 'the all-zero MAC is no station';
  return undefined;
}

export const normalizeMac = (text: string): string => text.toLowerCase();

export const macBytes = (mac: string): Buffer => Buffer.from(mac.split(':').map((o) => parseInt(o, 16)));

export const macOfBytes = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** A random unicast, locally administered MAC (the first octet's bit 1 set, bit 0 clear). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return macOfBytes(b);
}
