/**
 * The task-network preflight check (source-agent/preflight/task-network.ts) on facts and the dest's Negotiate
 * answer: ok for a task in the agent's namespace, a refusal with TASK_NETWORK_UNSUPPORTED for a shape Ferry
 * cannot move or a dest that cannot check it, PREFLIGHT_BRIDGE_MISSING and PREFLIGHT_ADDRESS_IN_USE from the
 * dest's answer (side dest), and the dest's bounds on a TaskNetwork a peer sends.
 */
import { describe, expect, it } from 'vitest';
import { checkTaskNetwork } from '../../dest-agent/request-bounds.js';
import type { TaskNetwork } from '../../shared/kernel/task-network.js';
import type { PeerInfo, TaskNetworkAnswerMessage } from '../../shared/transport/messages.js';
import type { PreflightInput } from '../../source-agent/preflight/preflight-check.js';
import { preflightRefusal, runPreflight } from '../../source-agent/preflight/preflight.js';
import { quietAgent, quietTree } from '../fakes/fake-preflight-facts.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const NET: TaskNetwork = { innerLink: 'eth0', mac: '02:77:00:00:00:64', addresses: ['10.77.1.100/24'], outerLink: 'fy0123abcd', bridge: 'ferry0' };
const peer = (features: string[] = ['task-network']): PeerInfo => ({
  ferryVersion: '0.1.0',
  protocolVersions: [1],
  pageSize: 4096,
  arch: 'x64',
  kernel: '6.18',
  hostname: 'b',
  trackers: ['hash'],
  criuVersion: '4.2.1',
  criuProblem: '',
  features,
});
const FREE: TaskNetworkAnswerMessage = { bridge: 'ferry0', bridgeProblem: '', taken: [] };

function check(tree: Partial<ReturnType<typeof quietTree>>, input: Partial<PreflightInput> = {}) {
  const findings = runPreflight({
    tree: { ...quietTree(), ...tree },
    agent: quietAgent(),
    criuFeatures: { fileLocks: 'auto', tcpEstablished: 'off' },
    networkLock: 'nftables',
    source: peer(),
    dest: peer(),
    taskNetworkAnswer: FREE,
    arch: 'x64',
    ...input,
  });
  return { finding: findings.find((f) => f.check === 'task-network')!, refusal: preflightRefusal(findings) };
}

describe('preflight: task-network', () => {
  it("ok for a task in the agent's namespace, whatever the dest", () => {
    expect(check({}).finding.verdict).toBe('ok');
    expect(check({}, { dest: peer([]), taskNetworkAnswer: undefined }).finding.verdict).toBe('ok');
  });

  it('ok when the dest has the bridge and nobody else answers the addresses', () => {
    const { finding, refusal } = check({ taskNetwork: NET });
    expect(finding.verdict).toBe('ok');
    expect(finding.message).toContain('10.77.1.100/24');
    expect(refusal).toBeUndefined();
  });

  it('a note without a dest (ferry check PID without --to)', () => {
    expect(check({ taskNetwork: NET }, { dest: undefined, taskNetworkAnswer: undefined }).finding.verdict).toBe('note');
  });

  it('refuses a shape it cannot move, with what was found', () => {
    const { finding, refusal } = check({ taskNetworkProblem: "the task's link mv0 (macvlan) is not a veth" });
    expect(finding).toMatchObject({ verdict: 'refuse', code: 'FERRY-1215', side: 'source' });
    expect(refusal!.key).toBe('TASK_NETWORK_UNSUPPORTED');
    expect(refusal!.detail).toContain('macvlan');
  });

  it('refuses a dest that cannot check (or restore) a task network', () => {
    const { finding } = check({ taskNetwork: NET }, { dest: peer([]), taskNetworkAnswer: undefined });
    expect(finding).toMatchObject({ verdict: 'refuse', code: 'FERRY-1215', side: 'dest' });
  });

  it("refuses the dest's missing bridge", () => {
    const { finding, refusal } = check({ taskNetwork: NET }, { taskNetworkAnswer: { bridge: 'br9', bridgeProblem: 'no link br9', taken: [] } });
    expect(finding).toMatchObject({ verdict: 'refuse', code: 'FERRY-1216', side: 'dest', key: 'PREFLIGHT_BRIDGE_MISSING' });
    expect(finding.message).toContain('no link br9');
    expect(refusal).toMatchObject({ key: 'PREFLIGHT_BRIDGE_MISSING', side: 'dest', phase: 'negotiate', sourceState: 'running' });
    expect(finding.hint).toContain('--bridge');
  });

  it('refuses an address another MAC answers on the dest', () => {
    const { finding } = check({ taskNetwork: NET }, { taskNetworkAnswer: { ...FREE, taken: [{ address: '10.77.1.100', macs: ['02:99:00:00:00:01'] }] } });
    expect(finding).toMatchObject({ verdict: 'refuse', code: 'FERRY-1217', side: 'dest' });
    expect(finding.message).toContain('10.77.1.100 answered by 02:99:00:00:00:01');
  });
});

describe('dest bounds: TaskNetwork', () => {
  const ok = (over: Partial<TaskNetwork>): TaskNetwork => ({ ...NET, ...over });
  it('accepts what run --net makes', () => {
    expect(() => checkTaskNetwork('task_network', NET, 'negotiate')).not.toThrow();
    expect(() => checkTaskNetwork('task_network', ok({ addresses: Array.from({ length: 16 }, (_, i) => `10.0.0.${i + 1}/24`) }), 'restore')).not.toThrow();
  });
  it('accepts dual stack, IPv6 in its canonical text', () => {
    expect(() => checkTaskNetwork('task_network', ok({ addresses: ['10.0.0.5/24', 'fd77:1::5/64', '2001:db8:ffff:ffff:ffff:ffff:ffff:fffe/128'] }), 'negotiate')).not.toThrow();
  });
  it.each([
    ['an inner link too long', ok({ innerLink: 'x'.repeat(16) })],
    ['an outer link with a slash', ok({ outerLink: 'a/b' })],
    ['an empty bridge', ok({ bridge: '' })],
    ["a bridge with '@' (criu's veth[..]:..@.. cannot carry it)", ok({ bridge: 'br@0' })],
    ["an outer link with '['", ok({ outerLink: 'fy[0' })],
    ["an inner link with ']'", ok({ innerLink: 'eth]0' })],
    ['a huge name', ok({ bridge: 'x'.repeat(100_000) })],
    ['a multicast MAC', ok({ mac: '01:00:5e:00:00:01' })],
    ['an upper-case MAC', ok({ mac: '02:AA:00:00:00:01' })],
    ['no address', ok({ addresses: [] })],
    ['17 addresses', ok({ addresses: Array.from({ length: 17 }, (_, i) => `10.0.0.${i + 1}/24`) })],
    ['an IPv6 address not in canonical text', ok({ addresses: ['fd00:0::1/64'] })],
    ['an upper-case IPv6 address', ok({ addresses: ['FD00::1/64'] })],
    ['a link-local IPv6 address', ok({ addresses: ['fe80::1/64'] })],
    ['an IPv6 prefix of 129', ok({ addresses: ['fd00::1/129'] })],
    ['an IPv6 address twice', ok({ addresses: ['fd00::1/64', 'fd00::1/128'] })],
    ['a prefix of 40', ok({ addresses: ['10.0.0.1/40'] })],
    ['the same address twice', ok({ addresses: ['10.0.0.1/24', '10.0.0.1/32'] })],
  ])('refuses %s (REQUEST_INVALID, the value not echoed)', (_what, n) => {
    const e = expectFerryError(() => checkTaskNetwork('task_network', n, 'negotiate'), 'REQUEST_INVALID');
    expect(e.detail).toMatch(/^task_network\./);
    expect(e.detail!.length).toBeLessThan(200);
  });
});
