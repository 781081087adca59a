/**
 * IPv4 addresses and ADDRESS/PREFIX, parsed strictly (four decimal octets without leading zeros, a prefix of
 * 1-32): what `ferry run --net` takes and a TaskNetwork carries. Pure; callers turn a problem into their own
 * error (a usage error on the command line, REQUEST_INVALID from a peer).
 */
export interface Ipv4Cidr {
  /** a.b.c.d */
  address: string;
  prefix: number;
}

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

export const isIpv4 = (s: string): boolean => IPV4.test(s);

/** The address as a 32-bit unsigned number. */
export function ipv4Number(address: string): number {
  return address.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

export const ipv4Bytes = (address: string): Buffer => Buffer.from(address.split('.').map(Number));

const mask = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** Whether `address` lies in the subnet of `cidr`. */
export function inSubnet(cidr: Ipv4Cidr, address: string): boolean {
  const m = mask(cidr.prefix);
  return ((ipv4Number(cidr.address) & m) >>> 0) === ((ipv4Number(address) & m) >>> 0);
}

/**
 * What is wrong with `text` as a host's ADDRESS/PREFIX, or undefined when it is one: syntax, a prefix outside
 * 1-32, an address no host can have (0.0.0.0/8, loopback, multicast and above), the subnet's own number or its
 * broadcast address (prefixes up to /30).
 */
export function ipv4CidrProblem(text: string): string | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return 'no /PREFIX';
  const address = text.slice(0, slash);
  const p = text.slice(slash + 1);
  if (address.includes(':')) return 'an IPv6 address, not IPv4 (ipv6.ts checks those)';
  if (!isIpv4(address)) return `${address.slice(0, 40)} is not an IPv4 address`;
  if (!/^(3[0-2]|[12]?\d)$/.test(p) || Number(p) === 0) return `the prefix must be 1 to 32`;
  const prefix = Number(p);
  const n = ipv4Number(address);
  const first = n >>> 24;
  if (first === 0 || first === 127 || first >= 224) return `${address} is not a host address (0/8, loopback, multicast or reserved)`;
  if (prefix <= 30) {
    const host = (n & ~mask(prefix)) >>> 0;
    if (host === 0) return `${address} is the number of its /${prefix} subnet, not a host in it`;
    if (host === (~mask(prefix) >>> 0)) return `${address} is the broadcast address of its /${prefix} subnet`;
  }
  return undefined;
}

/** `text` as an Ipv4Cidr; call ipv4CidrProblem first. */
export function parseIpv4Cidr(text: string): Ipv4Cidr {
  const [address, prefix] = text.split('/') as [string, string];
  return { address, prefix: Number(prefix) };
}
