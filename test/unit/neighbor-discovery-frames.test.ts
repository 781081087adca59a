/**
 * The neighbor discovery frames Ferry builds, byte for byte against NAs the Linux kernel itself sent (captured
 * from a veth: an unsolicited NA after DAD with ndisc_notify=1, for a link-local and a unique local address),
 * their ICMPv6 checksum, the DAD solicitation's shape, and the parser's refusals (hop limit, checksum, options).
 */
import { describe, expect, it } from 'vitest';
import { dadSolicitationFrame, icmpv6Checksum, parseNeighborFrame, unsolicitedAdvertisementFrame } from '../../shared/kernel/neighbor-discovery.js';
import { ipv6Bytes } from '../../shared/kernel/ipv6.js';

const MAC = '02:77:00:00:00:05';
/** Kernel 6.18, `ip addr add fd77:1::5/64 dev a6` (a6's MAC 02:77:00:00:00:05), as received on its peer. */
const KERNEL_NA_ULA =
  '33330000000102770000000586dd6000000000203afffd770001000000000000000000000005ff0200000000000000000000000000018800592820000000fd7700010000000000000000000000050201027700000005';
/** The same link's own link-local address, announced when it came up. */
const KERNEL_NA_LINK_LOCAL =
  '33330000000102770000000586dd6000000000203afffe80000000000000007700fffe000005ff0200000000000000000000000000018800582a20000000fe80000000000000007700fffe0000050201027700000005';

describe('neighbor discovery frames', () => {
  it('an unsolicited NA is the one the kernel sends, checksum included', () => {
    expect(unsolicitedAdvertisementFrame('fd77:1::5', MAC).toString('hex')).toBe(KERNEL_NA_ULA);
    expect(unsolicitedAdvertisementFrame('fe80::77:ff:fe00:5', MAC).toString('hex')).toBe(KERNEL_NA_LINK_LOCAL);
  });

  it("the kernel's NA parses: override only, to all nodes, its MAC in the target option", () => {
    expect(parseNeighborFrame(Buffer.from(KERNEL_NA_ULA, 'hex'))).toEqual({
      kind: 'advertisement',
      frameMac: MAC,
      src: 'fd77:1::5',
      dst: 'ff02::1',
      target: 'fd77:1::5',
      router: false,
      solicited: false,
      override: true,
      optionMac: MAC,
    });
  });

  it('the checksum of a message that holds its own checksum is zero (RFC 1071)', () => {
    const f = Buffer.from(KERNEL_NA_ULA, 'hex');
    expect(icmpv6Checksum(f.subarray(22, 38), f.subarray(38, 54), f.subarray(54))).toBe(0);
  });

  it('a DAD solicitation: from ::, to the solicited-node group and its MAC, hop limit 255, no link-layer option', () => {
    const f = dadSolicitationFrame('fd77:1::12:3456', MAC);
    expect(f.subarray(0, 6).toString('hex')).toBe('3333ff123456');
    expect(f.length).toBe(14 + 40 + 24);
    expect(parseNeighborFrame(f)).toEqual({
      kind: 'solicitation',
      frameMac: MAC,
      src: '::',
      dst: 'ff02::1:ff12:3456',
      target: 'fd77:1::12:3456',
      router: false,
      solicited: false,
      override: false,
    });
    expect(icmpv6Checksum(ipv6Bytes('::'), ipv6Bytes('ff02::1:ff12:3456'), f.subarray(54))).toBe(0);
  });

  it('refuses a frame with a hop limit below 255, a bad checksum, a zero-length option, or too short', () => {
    const lowHop = Buffer.from(KERNEL_NA_ULA, 'hex');
    lowHop[21] = 254;
    expect(parseNeighborFrame(lowHop)).toBeUndefined();
    const badSum = Buffer.from(KERNEL_NA_ULA, 'hex');
    badSum[57]! ^= 1;
    expect(parseNeighborFrame(badSum)).toBeUndefined();
    const zeroOption = Buffer.from(KERNEL_NA_ULA, 'hex');
    zeroOption[79] = 0;
    zeroOption.writeUInt16BE(0, 56);
    zeroOption.writeUInt16BE(icmpv6Checksum(zeroOption.subarray(22, 38), zeroOption.subarray(38, 54), zeroOption.subarray(54)), 56);
    expect(parseNeighborFrame(zeroOption)).toBeUndefined();
    expect(parseNeighborFrame(Buffer.alloc(60))).toBeUndefined();
  });
});
