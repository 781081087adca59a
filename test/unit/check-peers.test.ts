/** Negotiation on tables: can these two hosts migrate to each other, and in which protocol version? */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ErrorKey } from '../../shared/errors/codes.js';
import { chooseProtocolVersion, protocolVersions } from '../../shared/peer-info.js';
import type { NegotiateResponse, PeerInfo } from '../../shared/transport/messages.js';
import { checkPeers } from '../../source-agent/migration/check-peers.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const peer = (over: Partial<PeerInfo> = {}): PeerInfo => ({
  ferryVersion: '0.1.0',
  protocolVersions: [1],
  pageSize: 4096,
  arch: 'x64',
  kernel: '6.18.0',
  hostname: 'host-a',
  trackers: ['hash'],
  criuVersion: '4.2.1',
  criuProblem: '',
  features: ['page-hash-xxh3-128', 'zero-page-flag'],
  ...over,
});

const answer = (dest: Partial<PeerInfo>, protocolVersion = 1): NegotiateResponse => ({
  dest: peer({ hostname: 'host-b', ...dest }),
  protocolVersion,
});

describe('checkPeers', () => {
  it('returns the version the dest chose when everything matches', () => {
    expect(checkPeers(peer(), answer({}))).toBe(1);
    expect(checkPeers(peer({ protocolVersions: [1, 2, 3] }), answer({ protocolVersions: [2, 3] }, 3))).toBe(3);
  });

  const refusals: { name: string; source?: Partial<PeerInfo>; dest: Partial<PeerInfo>; version?: number; key: ErrorKey; detail: string }[] = [
    { name: 'no common version (dest answers 0)', dest: { protocolVersions: [2] }, version: 0, key: 'PROTOCOL_MISMATCH', detail: 'dest speaks 2' },
    { name: 'dest picks a version the source does not speak', dest: { protocolVersions: [1, 2] }, version: 2, key: 'PROTOCOL_MISMATCH', detail: 'source speaks 1' },
    { name: 'dest without CRIU', dest: { criuVersion: '', criuProblem: 'criu 4.1 is too old' }, key: 'DEST_NO_CRIU', detail: 'criu 4.1 is too old' },
    { name: 'dest without CRIU and no reason given', dest: { criuVersion: '' }, key: 'DEST_NO_CRIU', detail: 'criu not found' },
    { name: 'different architecture', dest: { arch: 'arm64' }, key: 'PLATFORM_MISMATCH', detail: 'dest is arm64' },
    { name: 'different page size', dest: { pageSize: 16384 }, key: 'PLATFORM_MISMATCH', detail: '16384 on the dest' },
    { name: 'dest without the zero-page flag', dest: { features: ['page-hash-xxh3-128'] }, key: 'PROTOCOL_MISMATCH', detail: 'lacks zero-page-flag' },
    { name: 'dest with another page hash', dest: { features: ['page-hash-sha256', 'zero-page-flag'] }, key: 'PROTOCOL_MISMATCH', detail: 'lacks page-hash-xxh3-128' },
  ];

  it.each(refusals)('$name -> $key', ({ source, dest, version, key, detail }) => {
    const e = expectFerryError(() => checkPeers(peer(source), answer(dest, version)), key);
    expect(e.phase).toBe('negotiate');
    expect(e.side).toBe('dest');
    // Nothing was touched yet: the operator is told the task still runs.
    expect(e.sourceState).toBe('running');
    expect(e.detail).toContain(detail);
  });

  it('checks the protocol before CRIU, and CRIU before the platform', () => {
    expectFerryError(() => checkPeers(peer(), answer({ criuVersion: '', arch: 'arm64' }, 0)), 'PROTOCOL_MISMATCH');
    expectFerryError(() => checkPeers(peer(), answer({ criuVersion: '', arch: 'arm64' })), 'DEST_NO_CRIU');
  });

  it('ignores differences that do not matter: kernel, hostname, trackers, features it does not need', () => {
    expect(checkPeers(peer(), answer({ kernel: '5.10.0', trackers: [], features: ['zero-page-flag', 'page-hash-xxh3-128', 'from-the-future'] }))).toBe(1);
  });
});

describe('chooseProtocolVersion', () => {
  it.each([
    { ours: [1], theirs: [1], want: 1 },
    { ours: [1, 2, 3], theirs: [2, 3, 4], want: 3 },
    { ours: [3, 1], theirs: [1, 3], want: 3 },
    { ours: [1, 2], theirs: [2, 1], want: 2 },
    { ours: [1], theirs: [2], want: 0 },
    { ours: [], theirs: [1], want: 0 },
    { ours: [1], theirs: [], want: 0 },
  ])('$ours with $theirs -> $want', ({ ours, theirs, want }) => {
    expect(chooseProtocolVersion(ours, theirs)).toBe(want);
    expect(chooseProtocolVersion(theirs, ours)).toBe(want);
  });
});

describe('protocolVersions', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('is the built-in list by default', () => {
    vi.stubEnv('FERRY_TEST_PROTOCOL_VERSIONS', '');
    expect(protocolVersions()).toEqual([1]);
  });

  it('can be replaced by tests, keeping only positive integers', () => {
    vi.stubEnv('FERRY_TEST_PROTOCOL_VERSIONS', '2, 3,x,0,-1,1.5');
    expect(protocolVersions()).toEqual([2, 3]);
  });
});
