/**
 * The dest's checks of a Restore's task network (issue 16, part B): every field bounded and well-formed before
 * anything is touched (REQUEST_INVALID naming the field, never echoing the value), the bridge present here
 * (TASK_BRIDGE_MISSING_ON_DEST), the outer veth's name kept when free and derived from the migration id when
 * not; and the criu arguments made of it.
 */
import { describe, expect, it } from 'vitest';
import { destOuterLink, restoreTaskNetwork } from '../../dest-agent/restore-task-network.js';
import { criuTaskNetworkRestoreArgs } from '../../shared/criu/criu-task-network.js';
import { isTaskNetworkHold } from '../../shared/kernel/task-network-hold.js';
import { FerryError } from '../../shared/errors/ferry-error.js';

const NET = { innerLink: 'eth0', mac: '02:77:00:00:00:64', addresses: ['10.77.3.100/24'], outerLink: 'fy0123abcd', bridge: 'ferry0' };

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof FerryError ? e.code : String(e);
  }
  return undefined;
}

describe('a Restore task network, checked on the dest', () => {
  const bad: [string, Partial<typeof NET>][] = [
    ['an inner link with a slash', { innerLink: 'eth/0' }],
    ['an outer link of 16 bytes', { outerLink: 'a'.repeat(16) }],
    ['a bridge with a colon (criu would split on it)', { bridge: 'br:0' }],
    ['an outer link with an @ (criu would split on it)', { outerLink: 'fy@0' }],
    ['an inner link with a bracket (criu would split on it)', { innerLink: 'eth]0' }],
    ['an upper-case MAC', { mac: '02:77:00:00:00:6A' }],
    ['an address twice', { addresses: ['10.77.3.100/24', '10.77.3.100/16'] }],
    ['an empty link name', { innerLink: '' }],
    ['a bridge with whitespace', { bridge: 'br 0' }],
    ['a multicast MAC', { mac: '01:00:5e:00:00:01' }],
    ['a zero MAC', { mac: '00:00:00:00:00:00' }],
    ['a MAC of 5 octets', { mac: '02:77:00:00:00' }],
    ['an address without a prefix', { addresses: ['10.77.3.100'] }],
    ['an IPv6 address not in its canonical text', { addresses: ['fd00:0::1/64'] }],
    ['a link-local IPv6 address', { addresses: ['fe80::1/64'] }],
    ['an octet above 255', { addresses: ['10.77.3.256/24'] }],
    ['a prefix above 32', { addresses: ['10.77.3.100/33'] }],
    ['no address', { addresses: [] }],
    ['17 addresses', { addresses: Array.from({ length: 17 }, (_, i) => `10.77.3.${i + 1}/24`) }],
  ];
  for (const [what, change] of bad) {
    it(`refuses ${what} with REQUEST_INVALID, before anything`, () => {
      // Refused before the bridge is looked at (lo is no bridge: that would be another code).
      expect(codeOf(() => restoreTaskNetwork({ ...NET, ...change }, 'mig-0001-aaaa', 'lo'))).toBe(new FerryError('REQUEST_INVALID').code);
    });
  }

  it('never echoes the value it refuses', () => {
    expect.assertions(2);
    try {
      restoreTaskNetwork({ ...NET, innerLink: 'x'.repeat(5000) }, 'mig-0001-aaaa', 'lo');
    } catch (e) {
      expect(e).toBeInstanceOf(FerryError);
      expect((e as FerryError).detail).not.toContain('xxxx');
    }
  });

  it('refuses a bridge that is not here, or not a bridge, with TASK_BRIDGE_MISSING_ON_DEST', () => {
    expect(codeOf(() => restoreTaskNetwork(NET, 'mig-0001-aaaa', 'ferry-no-such-bridge'))).toBe(new FerryError('TASK_BRIDGE_MISSING_ON_DEST').code);
    // lo exists everywhere and is no bridge.
    expect(codeOf(() => restoreTaskNetwork(NET, 'mig-0001-aaaa', 'lo'))).toBe(new FerryError('TASK_BRIDGE_MISSING_ON_DEST').code);
    expect(restoreTaskNetwork(null, 'mig-0001-aaaa', 'lo')).toBeUndefined();
  });

  it("keeps the source's outer name when free here, else fy + 8 hex of the migration id (stable, 10 bytes)", () => {
    expect(destOuterLink('fy0123abcd', 'mig-1', () => false)).toBe('fy0123abcd');
    const other = destOuterLink('fy0123abcd', 'mig-1', () => true);
    expect(other).toMatch(/^fy[0-9a-f]{8}$/);
    expect(destOuterLink('fy0123abcd', 'mig-1', () => true)).toBe(other);
    expect(destOuterLink('fy0123abcd', 'mig-2', () => true)).not.toBe(other);
  });

  it('restores with --external veth[INNER]:OUTER@BRIDGE, and nothing for a task in the host netns', () => {
    expect(criuTaskNetworkRestoreArgs(NET)).toEqual(['--external', 'veth[eth0]:fy0123abcd@ferry0']);
    expect(criuTaskNetworkRestoreArgs(undefined)).toEqual([]);
  });

  it('reads a journaled hold back only when every field is there', () => {
    expect(isTaskNetworkHold({ netns: '/proc/1/ns/net', network: NET })).toBe(true);
    expect(isTaskNetworkHold({ netns: '/proc/1/ns/net', network: { ...NET, addresses: [1] } })).toBe(false);
    expect(isTaskNetworkHold({ netns: '/proc/1/ns/net' })).toBe(false);
  });
});
