/**
 * The runtime `ferry check` and `ferry --version` report (shared/metrics/build-info.ts): Node against
 * package.json's engines (shared/node-engines.ts), and `ferry check` (without a PID, and with --json)
 * naming Ferry's, Node's, CRIU's and the kernel's versions.
 */
import { release } from 'node:os';
import { describe, expect, it, vi } from 'vitest';
import { parseNodeVersion, satisfiesEngines } from '../../shared/node-engines.js';
import { runtimeReport } from '../../shared/metrics/build-info.js';
import { ferryVersion, nodeEngineRange } from '../../shared/repo-root.js';

describe("Node against package.json's engines", () => {
  it.each([
    ['v20.19.0', '>=20', true],
    ['v18.20.1', '>=20', false],
    ['v22.1.0', '>=20.10.0 <23', true],
    ['v23.0.0', '>=20.10.0 <23', false],
    ['v20.9.9', '>=20.10.0 <23', false],
    ['v20.11.3', '^20.11.0', true],
    ['v21.0.0', '^20.11.0', false],
    ['v22.1.9', '~22.1', true],
    ['v22.2.0', '~22.1', false],
    ['v20.5.0', '20.x', true],
    ['v21.0.0', '20.x', false],
    ['v18.0.0', '^18.17.0 || >=20', false],
    ['v18.18.0', '^18.17.0 || >=20', true],
    ['v25.0.0', '^18.17.0 || >=20', true],
    ['v20.0.0', '>= 20', true],
    ['v20.0.0', '>20', false],
    ['v21.0.0', '>20', true],
    ['v20.0.0', '<=20', true],
    ['v21.0.0', '<=20', false],
    ['v12.0.0', '*', true],
    ['v12.0.0', '', true],
  ])('%s in %j: %s', (version, range, ok) => {
    expect(satisfiesEngines(version, range)).toBe(ok);
  });

  it('says it cannot tell, never "satisfied", for a range or a version it does not read', () => {
    expect(satisfiesEngines('v20.0.0', '>=20 <lts')).toBeUndefined();
    expect(satisfiesEngines('v20.0.0', 'latest')).toBeUndefined();
    expect(satisfiesEngines('twenty', '>=20')).toBeUndefined();
    expect(parseNodeVersion('v20.19.0-nightly')).toEqual([20, 19, 0]);
  });
});

describe('the runtime report', () => {
  it("holds Ferry's version, Node's against the engines, CRIU's (or why none) and the kernel", async () => {
    const r = await runtimeReport();
    expect(r.version).toBe(ferryVersion());
    expect(r.nodeVersion).toBe(process.version);
    expect(r.nodeEngines).toBe(nodeEngineRange());
    expect(r.nodeSupported).toBe(true); // this test runs on a supported Node
    expect(r.kernel).toBe(release());
    if (r.criuPath) expect(r.criuVersion).toMatch(/^\d+\.\d+/);
    else expect(r.criuProblem).toBeTruthy();
  });

  it('is in ferry check, with --json and without a PID, and in ferry --version --json', async () => {
    const { main } = await import('../../cli/main.js');
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((s: string) => void out.push(s));
    try {
      await main(['check', '--json']);
      await main(['check']);
      await main(['version', '--json']);
    } finally {
      vi.restoreAllMocks();
    }
    const [json, text, version] = out;
    const rt = (JSON.parse(json!) as { runtime: Record<string, unknown> }).runtime;
    expect(rt).toMatchObject({ version: ferryVersion(), nodeVersion: process.version, nodeEngines: nodeEngineRange(), nodeSupported: true, kernel: release() });
    expect('criuPath' in rt && 'criuVersion' in rt).toBe(true);
    expect(text!.split('\n')[0]).toMatch(new RegExp(`^runtime: ferry ${ferryVersion()}, node ${process.version} \\(engines .+: ok\\), criu (\\S+ \\(/.+\\)|none: .+), kernel ${release()} `));
    expect(JSON.parse(version!)).toEqual(rt);
  });
});
