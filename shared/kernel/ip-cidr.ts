/**
 * A host's ADDRESS/PREFIX of either family, as a TaskNetwork's addresses carry them: IPv4 (ipv4.ts) or IPv6
 * (ipv6.ts, global or unique local only). The family is the text's: a ':' makes it IPv6. The canonical text
 * (IPv6 in RFC 5952 form) is what travels, so that one address has one spelling on both sides.
 */
import { ipv4CidrProblem, parseIpv4Cidr } from './ipv4.js';
import { ipv6CidrProblem, parseIpv6Cidr } from './ipv6.js';

export type IpFamily = 4 | 6;

export interface IpCidr {
  family: IpFamily;
  /** Canonical text. */
  address: string;
  prefix: number;
}

export const cidrFamily = (text: string): IpFamily => (text.includes(':') ? 6 : 4);

/** What is wrong with `text` as a host's ADDRESS/PREFIX of its family, or undefined. */
export const ipCidrProblem = (text: string): string | undefined => (cidrFamily(text) === 6 ? ipv6CidrProblem(text) : ipv4CidrProblem(text));

/** `text` parsed and normalized; call ipCidrProblem first. */
export function parseIpCidr(text: string): IpCidr {
  const family = cidrFamily(text);
  return { family, ...(family === 6 ? parseIpv6Cidr(text) : parseIpv4Cidr(text)) };
}

export const formatCidr = (c: { address: string; prefix: number }): string => `${c.address}/${c.prefix}`;

/** Whether `text` is a host's ADDRESS/PREFIX written canonically (what a peer must send). */
export const isCanonicalCidr = (text: string): boolean => ipCidrProblem(text) === undefined && formatCidr(parseIpCidr(text)) === text;

/** The address of ADDRESS/PREFIX (or of a bare address). */
export const cidrAddress = (text: string): string => text.split('/')[0]!;
