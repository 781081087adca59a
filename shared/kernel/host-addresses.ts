/**
 * The IP addresses of this process's network namespace: a dest reports them so that the source can refuse a
 * task whose socket is bound to an address the dest does not have (CRIU's restore would fail to bind it).
 */
import { networkInterfaces } from 'node:os';

/** More than any host this runs on; the wire's bound (dest-agent/request-bounds.ts). */
export const MAX_HOST_ADDRESSES = 256;
/** An IPv6 address with a zone is under 64 characters. */
export const MAX_ADDRESS_LENGTH = 64;

/** Every address of every interface, IPv4 and IPv6 (without zone), deduplicated. */
export function hostAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const address = a.address.split('%')[0]!;
      if (address.length <= MAX_ADDRESS_LENGTH) out.add(address);
    }
  }
  return [...out].slice(0, MAX_HOST_ADDRESSES);
}
