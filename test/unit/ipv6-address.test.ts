/**
 * IPv6 addresses and ADDRESS/PREFIX: strict parsing, the one canonical text (RFC 5952), the refusals of
 * addresses no task's identity can be, subnets, the solicited-node group, and the family dispatch of ip-cidr.ts.
 */
import { describe, expect, it } from 'vitest';
import { cidrFamily, ipCidrProblem, isCanonicalCidr, parseIpCidr } from '../../shared/kernel/ip-cidr.js';
import { formatIpv6, inSubnet6, ipv6CidrProblem, ipv6Bytes, isIpv6, normalizeIpv6, parseIpv6Cidr, solicitedNodeGroup } from '../../shared/kernel/ipv6.js';

describe('IPv6 addresses', () => {
  it.each([
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['2001:DB8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'], // the first of two equal zero runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group is never ::
    ['fd77:1:0:0:0:0:0:0', 'fd77:1::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['::', '::'],
    ['fd00::0a00:0005', 'fd00::a00:5'],
    ['::ffff:10.0.0.5', '::ffff:a00:5'],
    ['2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'], // the longer run wins
  ])('%s is written %s', (text, canonical) => {
    expect(isIpv6(text)).toBe(true);
    expect(normalizeIpv6(text)).toBe(canonical);
    expect(formatIpv6(ipv6Bytes(canonical))).toBe(normalizeIpv6(text));
  });
  it.each(['', ':', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::1', 'fe80::1%eth0', 'g::1', '1:2:3:4:5:6:7:8::', '::1.2.3.4:5', '10.0.0.5'])(
    '%j is no IPv6 address',
    (text) => {
      expect(isIpv6(text)).toBe(false);
    },
  );
});

describe('IPv6 ADDRESS/PREFIX', () => {
  it('accepts global and unique local host addresses, normalized', () => {
    for (const ok of ['fd77:1::5/64', '2001:db8::1/128', '2001:DB8::1/48', 'fd00::1/1', 'fd77:1::1/127']) expect(ipv6CidrProblem(ok), ok).toBeUndefined();
    expect(parseIpv6Cidr('FD77:0001:0000::0005/64')).toEqual({ address: 'fd77:1::5', prefix: 64 });
  });
  it.each([
    ['fd77::5', /no \/PREFIX/],
    ['fd77::5/', /prefix/],
    ['fd77::5/0', /prefix/],
    ['fd77::5/129', /prefix/],
    ['fd77::5/064', /prefix/],
    ['fd77:::5/64', /not an IPv6/],
    ['::/64', /unspecified/],
    ['::1/128', /loopback/],
    ['ff02::1/64', /multicast/],
    ['fe80::1/64', /link-local/],
    ['febf::1/64', /link-local/],
    ['::ffff:10.0.0.5/96', /IPv4-mapped/],
    ['fd77:1::/64', /subnet-router anycast/],
  ])('refuses %s', (text, why) => {
    expect(ipv6CidrProblem(text)).toMatch(why);
  });
  it('subnets', () => {
    expect(inSubnet6({ address: 'fd77:1::5', prefix: 64 }, 'fd77:1::1')).toBe(true);
    expect(inSubnet6({ address: 'fd77:1::5', prefix: 64 }, 'fd77:2::1')).toBe(false);
    expect(inSubnet6({ address: 'fd77:1::5', prefix: 60 }, 'fd77:1:0:f::1')).toBe(true);
    expect(inSubnet6({ address: 'fd77:1::5', prefix: 61 }, 'fd77:1:0:f::1')).toBe(false);
    expect(inSubnet6({ address: 'fd77:1::5', prefix: 64 }, '10.0.0.1')).toBe(false);
  });
  it('the solicited-node group keeps the last 24 bits', () => {
    expect(formatIpv6(solicitedNodeGroup(ipv6Bytes('fd77:1::12:3456')))).toBe('ff02::1:ff12:3456');
  });
});

describe('either family', () => {
  it('dispatches on the text and normalizes', () => {
    expect(cidrFamily('10.0.0.5/24')).toBe(4);
    expect(cidrFamily('fd77::5/64')).toBe(6);
    expect(parseIpCidr('10.0.0.5/24')).toEqual({ family: 4, address: '10.0.0.5', prefix: 24 });
    expect(parseIpCidr('FD77::0005/64')).toEqual({ family: 6, address: 'fd77::5', prefix: 64 });
    expect(ipCidrProblem('fe80::1/64')).toMatch(/link-local/);
    expect(ipCidrProblem('10.0.0.0/24')).toMatch(/number of its/);
  });
  it('a canonical CIDR is one spelling only', () => {
    expect(isCanonicalCidr('fd77:1::5/64')).toBe(true);
    expect(isCanonicalCidr('10.0.0.5/24')).toBe(true);
    expect(isCanonicalCidr('fd77:1:0::5/64')).toBe(false);
    expect(isCanonicalCidr('FD77:1::5/64')).toBe(false);
    expect(isCanonicalCidr('fe80::1/64')).toBe(false);
  });
});
