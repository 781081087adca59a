/**
 * The syntax of a task's network identity: IPv4 ADDRESS/PREFIX (IPv6: ipv6-address.test.ts), MACs, interface
 * names, and `ferry run --net`'s flags compiled (dual stack; every refusal a BAD_ARGUMENT, before anything is touched).
 */
import { describe, expect, it } from 'vitest';
import { inSubnet, ipv4CidrProblem, ipv4Number, parseIpv4Cidr } from '../../shared/kernel/ipv4.js';
import { criuLinkNameProblem, linkNameProblem } from '../../shared/kernel/link-name.js';
import { macProblem, normalizeMac, randomMac } from '../../shared/kernel/mac-address.js';
import { compileTaskNetOptions } from '../../source-agent/task-network-setup.js';
import { runCommand } from '../../cli/commands/run.js';
import { expectFerryError, expectFerryRejection } from '../support/ferry-error-expect.js';

describe('IPv4 ADDRESS/PREFIX', () => {
  it('accepts host addresses', () => {
    for (const ok of ['10.0.0.5/24', '192.168.1.1/32', '10.77.3.100/8', '172.16.0.1/31', '1.2.3.4/1']) expect(ipv4CidrProblem(ok), ok).toBeUndefined();
    expect(parseIpv4Cidr('10.0.0.5/24')).toEqual({ address: '10.0.0.5', prefix: 24 });
  });
  it.each([
    ['10.0.0.5', /no \/PREFIX/],
    ['10.0.0.5/', /prefix/],
    ['10.0.0.5/0', /prefix/],
    ['10.0.0.5/33', /prefix/],
    ['10.0.0.5/024', /prefix/],
    ['10.0.0.256/24', /not an IPv4/],
    ['10.0.0.05/24', /not an IPv4/],
    ['10.0.0/24', /not an IPv4/],
    ['fd00::1/64', /IPv6/],
    ['127.0.0.2/8', /not a host address/],
    ['0.1.2.3/8', /not a host address/],
    ['224.0.0.1/24', /not a host address/],
    ['10.0.0.0/24', /number of its/],
    ['10.0.0.255/24', /broadcast/],
  ])('refuses %s', (text, why) => {
    expect(ipv4CidrProblem(text)).toMatch(why);
  });
  it('subnets', () => {
    expect(inSubnet({ address: '10.0.0.5', prefix: 24 }, '10.0.0.1')).toBe(true);
    expect(inSubnet({ address: '10.0.0.5', prefix: 24 }, '10.0.1.1')).toBe(false);
    expect(inSubnet({ address: '10.0.0.5', prefix: 32 }, '10.0.0.5')).toBe(true);
    expect(inSubnet({ address: '200.0.0.5', prefix: 1 }, '129.0.0.1')).toBe(true);
    expect(ipv4Number('255.255.255.255')).toBe(0xffffffff);
  });
});

describe('MACs and interface names', () => {
  it('accepts a unicast MAC in either case; refuses multicast, zero and bad syntax', () => {
    expect(macProblem('02:00:0A:00:00:05')).toBeUndefined();
    expect(normalizeMac('02:00:0A:00:00:05')).toBe('02:00:0a:00:00:05');
    expect(macProblem('01:00:5e:00:00:01')).toMatch(/multicast/);
    expect(macProblem('ff:ff:ff:ff:ff:ff')).toMatch(/multicast/);
    expect(macProblem('00:00:00:00:00:00')).toMatch(/all-zero/);
    for (const bad of ['02:00:0a:00:00', '02-00-0a-00-00-05', '020:00:0a:00:00:05', '', 'zz:00:00:00:00:00']) expect(macProblem(bad), bad).toMatch(/not a MAC/);
  });
  it('draws random MACs that are unicast and locally administered', () => {
    for (let i = 0; i < 200; i++) {
      const mac = randomMac();
      expect(macProblem(mac)).toBeUndefined();
      expect(parseInt(mac.slice(0, 2), 16) & 3).toBe(2);
    }
  });
  it('interface names: 1-15 bytes, no "/", ":" or whitespace, not "." or ".."', () => {
    for (const ok of ['eth0', 'ferry0', 'fy0123abcd', 'a', 'x'.repeat(15), 'br-lan.10']) expect(linkNameProblem(ok), ok).toBeUndefined();
    for (const bad of ['', 'x'.repeat(16), 'é'.repeat(8), 'a/b', 'a:b', 'a b', '.', '..', 'a\tb']) expect(linkNameProblem(bad), bad).toBeDefined();
  });
  it("names criu can be given: the kernel's, and only A-Z a-z 0-9 _ . -", () => {
    for (const ok of ['eth0', 'ferry0', 'fy0123abcd', 'br-lan.10', 'br_0']) expect(criuLinkNameProblem(ok), ok).toBeUndefined();
    for (const bad of ['br@0', 'a[b', 'a]b', 'a:b', 'x'.repeat(16), 'é', 'a+b']) expect(criuLinkNameProblem(bad), bad).toBeDefined();
  });
});

describe('ferry run --net: compiled flags', () => {
  it('defaults: bridge ferry0, no gateway given, a random MAC', () => {
    const c = compileTaskNetOptions({ net: '10.0.0.5/24' });
    expect(c).toMatchObject({ addresses: [{ family: 4, address: '10.0.0.5', prefix: 24 }], bridge: 'ferry0', gateway: undefined, gateway6: undefined });
    expect(macProblem(c.mac)).toBeUndefined();
    expect(compileTaskNetOptions({ net: '10.0.0.5/24', bridge: 'br1', gateway: '10.0.0.1', mac: '02:AA:00:00:00:01' })).toEqual({
      addresses: [{ family: 4, address: '10.0.0.5', prefix: 24 }],
      bridge: 'br1',
      gateway: '10.0.0.1',
      gateway6: undefined,
      mac: '02:aa:00:00:00:01',
    });
  });
  it('dual stack: one address per --net, IPv6 normalized, a gateway6 in the prefix or link-local', () => {
    const c = compileTaskNetOptions({ net: ['10.0.0.5/24', 'FD77:1:0::5/64'], gateway6: 'fd77:1:0::1' });
    expect(c.addresses).toEqual([
      { family: 4, address: '10.0.0.5', prefix: 24 },
      { family: 6, address: 'fd77:1::5', prefix: 64 },
    ]);
    expect(c.gateway6).toBe('fd77:1::1');
    expect(compileTaskNetOptions({ net: ['fd77:1::5/64'], gateway6: 'FE80::1' }).gateway6).toBe('fe80::1');
    expect(compileTaskNetOptions({ net: Array.from({ length: 8 }, (_, i) => `fd77:1::${i + 1}/64`) }).addresses).toHaveLength(8);
  });
  it.each([
    [{ net: '10.0.0.5/40' }],
    [{ net: '10.0.0.5/24', bridge: 'a-very-long-bridge-name' }],
    [{ net: '10.0.0.5/24', gateway: '10.0.1.1' }],
    [{ net: '10.0.0.5/24', gateway: '10.0.0.5' }],
    [{ net: '10.0.0.5/24', gateway: 'router' }],
    [{ net: '10.0.0.5/24', gateway: 'fd77::1' }],
    [{ net: '10.0.0.5/24', mac: '03:00:00:00:00:01' }],
    [{ net: 'fe80::5/64' }],
    [{ net: 'fd77:1::/64' }],
    [{ net: 'fd77::5/129' }],
    [{ net: ['fd77::5/64', 'FD77:0::5/64'] }],
    [{ net: ['10.0.0.5/24', '10.0.0.5/16'] }],
    [{ net: Array.from({ length: 9 }, (_, i) => `fd77:1::${i + 1}/64`) }],
    [{ net: [] }],
    [{ net: '10.0.0.5/24', gateway6: 'fe80::1' }],
    [{ net: 'fd77:1::5/64', gateway6: 'fd77:2::1' }],
    [{ net: 'fd77:1::5/64', gateway6: 'fd77:1::5' }],
    [{ net: 'fd77:1::5/64', gateway6: '10.0.0.1' }],
  ])('refuses %j', (o) => {
    expectFerryError(() => compileTaskNetOptions(o), 'BAD_ARGUMENT');
  });
  it('--bridge, --gateway, --gateway6 and --mac without --net are usage errors', async () => {
    await expectFerryRejection(runCommand(['--bridge', 'br0', '--', 'true']), 'BAD_ARGUMENT');
    await expectFerryRejection(runCommand(['--mac', '02:00:00:00:00:01', '--', 'true']), 'BAD_ARGUMENT');
    await expectFerryRejection(runCommand(['--gateway6', 'fe80::1', '--', 'true']), 'BAD_ARGUMENT');
  });
});
