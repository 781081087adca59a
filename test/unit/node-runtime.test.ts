/**
 * The Node releases Ferry runs on: the one table's verdicts, package.json's engines derived from it, the start-up
 * refusal (FERRY-0030) and the runtime this very suite runs under (CI runs it under Node 20 and Node 24).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.js';
import { repoRoot } from '../../shared/repo-root.js';
import { NODE_ENGINES, nodeRuntime } from '../../shared/runtime/node-runtime.js';

const DAY = new Date('2026-12-01T00:00:00Z');

describe('node runtime', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  it("package.json's engines is the table's range", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { engines: { node: string } };
    expect(pkg.engines.node).toBe(NODE_ENGINES);
    expect(NODE_ENGINES).toBe('^20.19.0 || ^22.12.0 || >=24.0.0');
  });

  it('classifies each release line: supported, past its end of life, newer than tested, refused', () => {
    const status = (v: string, at = DAY): string => nodeRuntime(v, at).status;
    expect(status('22.23.5')).toBe('supported');
    expect(status('v24.22.3')).toBe('supported');
    expect(status('24.0.0')).toBe('supported');
    expect(status('22.12.0')).toBe('supported');
    // Node 20 runs (the machines here ship it) but is past its end of life.
    expect(status('20.20.2')).toBe('end-of-life');
    expect(status('20.20.2', new Date('2026-04-30T12:00:00Z'))).toBe('supported');
    expect(status('26.1.0')).toBe('untested');
    for (const v of ['18.20.4', '20.18.3', '21.7.3', '22.11.0', '23.11.1', '16.0.0']) expect(status(v), v).toBe('unsupported');
    expect(nodeRuntime('18.20.4', DAY).note).toContain(NODE_ENGINES);
  });

  it('start-up refuses an unsupported runtime with FERRY-0030 (exit 2); --version still answers', async () => {
    const errors: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((s: unknown) => void errors.push(String(s)));
    const out = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    vi.stubEnv('FERRY_TEST_NODE_VERSION', '18.20.4');
    expect(await main(['check', '--json'])).toBe(2);
    const refusal = JSON.parse(String(out.mock.calls[0]?.[0])) as { error: { code: string; detail: string } };
    expect(refusal.error.code).toBe('FERRY-0030');
    expect(refusal.error.detail).toContain('v18.20.4');
    expect(errors.join('\n')).toContain('FERRY-0030');
    expect(await main(['dest-agent', '--help'])).toBe(2);
    out.mockClear();
    expect(await main(['version', '--json'])).toBe(0);
    expect(JSON.parse(String(out.mock.calls[0]?.[0]))).toMatchObject({ nodeVersion: process.version });
  });

  it('this suite runs on a runtime Ferry accepts (the log names it)', () => {
    const r = nodeRuntime();
    console.log(`node runtime of this run: ${r.version} ${r.status} (N-API ${process.versions.napi}, ${process.execPath})`);
    expect(r.status).not.toBe('unsupported');
  });
});
