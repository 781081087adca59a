/**
 * The Node releases Ferry runs on: package.json's engines against the releases CI runs (and those it must refuse),
 * each line's end of life, the start-up refusal (FERRY-0060), and the runtime this very suite runs under (CI runs
 * it under the machine's Node 20, a private Node 24 and a private Node 22).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.js';
import { satisfiesEngines } from '../../shared/node-engines.js';
import { nodeEngineRange } from '../../shared/repo-root.js';
import { nodeLifeNote, unsupportedNode } from '../../shared/runtime/node-runtime.js';

const DAY = new Date('2026-12-01T00:00:00Z');

describe('node runtime', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  it("package.json's engines take the LTS lines CI runs and nothing older or odd", () => {
    const engines = nodeEngineRange();
    for (const v of ['v20.19.0', 'v20.20.2', 'v22.12.0', 'v22.23.5', 'v24.0.0', 'v24.22.3', 'v26.1.0']) expect(satisfiesEngines(v, engines), v).toBe(true);
    for (const v of ['v18.20.8', 'v20.18.3', 'v21.7.3', 'v22.11.0', 'v23.11.1']) expect(satisfiesEngines(v, engines), v).toBe(false);
    expect(unsupportedNode('v18.20.8', engines)).toContain(engines);
    expect(unsupportedNode('v24.22.3', engines)).toBeUndefined();
    // A range the reader does not understand refuses nothing (ferry check says so).
    expect(unsupportedNode('v18.20.8', '>=20 <lts')).toBeUndefined();
  });

  it("each line's end of life: Node 20 runs but is past it", () => {
    expect(nodeLifeNote('v20.20.2', DAY)).toMatch(/^past its end of life \(2026-04-30\)/);
    expect(nodeLifeNote('v20.20.2', new Date('2026-04-30T12:00:00Z'))).toBe('supported until 2026-04-30');
    expect(nodeLifeNote('v22.23.5', DAY)).toBe('supported until 2027-04-30');
    expect(nodeLifeNote('v24.22.3', DAY)).toBe('supported until 2028-04-30');
    expect(nodeLifeNote('v26.1.0', DAY)).toMatch(/^newer than/);
  });

  it('start-up refuses a Node outside the engines with FERRY-0060 (exit 2); --version and check still answer', async () => {
    const errors: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((s: unknown) => void errors.push(String(s)));
    const out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    vi.stubEnv('FERRY_TEST_NODE_VERSION', 'v18.20.8');
    expect(await main(['migrate', '1', '--to', '127.0.0.1:1', '--json'])).toBe(2);
    const refusal = JSON.parse(String(out.mock.calls[0]?.[0])) as { error: { code: string; detail: string } };
    expect(refusal.error.code).toBe('FERRY-0060');
    expect(refusal.error.detail).toContain('v18.20.8');
    expect(errors.join('\n')).toContain('FERRY-0060');
    expect(await main(['dest-agent', '--help'])).toBe(2);
    out.mockClear();
    expect(await main(['version', '--json'])).toBe(0);
    expect(JSON.parse(String(out.mock.calls[0]?.[0]))).toMatchObject({ nodeVersion: process.version });
  });

  it('this suite runs on a Node within the engines (the log names it)', () => {
    console.log(`node runtime of this run: ${process.version}, ${nodeLifeNote(process.version)} (N-API ${process.versions.napi}, ${process.execPath})`);
    expect(unsupportedNode(process.version, nodeEngineRange())).toBeUndefined();
  });
});
