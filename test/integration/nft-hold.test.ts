/**
 * The network hold over netlink against the real kernel, in a network namespace of the test's own: both tables
 * with their dropping chains go in as one transaction, a TCP connect over the namespace's loopback then gets
 * nowhere (input and output dropped); opened (an accept rule in each chain) it connects, and after the release too. Adding twice is harmless,
 * releasing twice finds nothing, and nothing else of the namespace's ruleset is touched. A hold added over a
 * leftover opened one (its accept rules still there) replaces it and holds (review 16, finding 1).
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addNetworkHold, HOLD_TABLES, isNetworkHeld, openNetworkHold, releaseNetworkHold } from '../../shared/kernel/nft-hold.js';
import { addNftTable, countNftRules, listNftBaseChains, listNftTables } from '../../shared/kernel/nft-tables.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const runnable = canRun('nft hold', isRoot(), hasCommand('python3'), hasCommand('ip'), hasCommand('nsenter'));

/** A TCP connect to a listener on the namespace's loopback, bounded by 0.5 s: 'ok' or the error's name. */
function loopbackConnect(netns: string): string {
  const py = [
    'import socket',
    's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)',
    'c = socket.socket(); c.settimeout(0.5)',
    'try:',
    '    c.connect(s.getsockname()); print("ok")',
    'except Exception as e:',
    '    print(type(e).__name__)',
  ].join('\n');
  const r = spawnSync('nsenter', [`--net=${netns}`, 'python3', '-c', py], { encoding: 'utf8', timeout: 10_000 });
  return r.stdout.trim() || r.stderr.trim();
}

describe.skipIf(!runnable)('the network hold (real kernel)', () => {
  const name = `ferry-it-hold-${process.pid}`;
  const netns = `/run/netns/${name}`;

  beforeAll(() => {
    const r = spawnSync('ip', ['netns', 'add', name], { timeout: 10_000 });
    if (r.status !== 0) throw new Error(`ip netns add: ${r.stderr.toString()}`);
    spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { timeout: 10_000 });
  });

  afterAll(() => {
    spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
  });

  it('drops input and output while held, in both families, and lets go whole', () => {
    addNftTable(netns, { family: 'inet', name: 'CRIU-someone-elses' });
    expect(loopbackConnect(netns)).toBe('ok');
    expect(isNetworkHeld(netns)).toBe(false);

    addNetworkHold(netns);
    addNetworkHold(netns);
    expect(isNetworkHeld(netns)).toBe(true);
    const chains = listNftBaseChains(netns).filter((c) => c.table.name === 'ferry-hold');
    expect(chains.map((c) => `${c.table.family} ${c.name} ${c.hook} ${c.policy}`).sort()).toEqual([
      'arp input input drop',
      'arp output output drop',
      'inet input input drop',
      'inet output output drop',
    ]);
    expect(loopbackConnect(netns)).toBe('TimeoutError');

    // Opened (an accept rule in each chain, no hook changed): traffic flows, the tables stay, it is no hold now.
    openNetworkHold(netns);
    expect(loopbackConnect(netns)).toBe('ok');
    expect(isNetworkHeld(netns)).toBe(false);
    expect(listNftTables(netns).filter((t) => t.name === 'ferry-hold')).toHaveLength(2);

    expect(releaseNetworkHold(netns).sort()).toEqual(['arp ferry-hold', 'inet ferry-hold']);
    expect(releaseNetworkHold(netns)).toEqual([]);
    expect(isNetworkHeld(netns)).toBe(false);
    expect(loopbackConnect(netns)).toBe('ok');
    expect(listNftTables(netns)).toEqual([{ family: 'inet', name: 'CRIU-someone-elses' }]);
  }, 30_000);

  it('replaces a leftover opened hold when added again: held, no accept rule left, traffic dropped', () => {
    addNetworkHold(netns);
    openNetworkHold(netns);
    expect(loopbackConnect(netns)).toBe('ok');
    // What an agent that died between the open and the deletion leaves: the next move's hold goes over it.
    addNetworkHold(netns);
    expect(isNetworkHeld(netns)).toBe(true);
    expect(HOLD_TABLES.map((t) => countNftRules(netns, t).size)).toEqual([0, 0]);
    expect(listNftTables(netns).filter((t) => t.name === 'ferry-hold')).toHaveLength(2);
    expect(loopbackConnect(netns)).toBe('TimeoutError');
    expect(releaseNetworkHold(netns).sort()).toEqual(['arp ferry-hold', 'inet ferry-hold']);
    expect(loopbackConnect(netns)).toBe('ok');
  }, 30_000);
});
