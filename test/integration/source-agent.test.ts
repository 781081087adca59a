/**
 * `ferry migrate --via` against a real source agent on loopback: the options travel as given and are compiled
 * by the agent, whose refusals come back with their codes and exit codes as if the CLI had run the migration.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { startSourceAgent, type SourceAgent } from '../../source-agent/source-agent.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

let agent: SourceAgent | undefined;
beforeAll(async () => {
  agent = await startSourceAgent({ listen: { host: '127.0.0.1', port: 0 }, log: silentLogger });
});
afterAll(async () => {
  await agent?.close();
});

/** Runs the CLI in this process and returns its exit code and the error line of --json. */
async function ferry(argv: string[]): Promise<{ code: number; error: { code: string; key: string } | undefined }> {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((l: unknown) => void out.push(String(l)));
  const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  try {
    const code = await main(argv);
    const line = out.map((l) => JSON.parse(l) as { kind: string; error?: { code: string; key: string } }).find((l) => l.kind === 'error');
    return { code, error: line?.error };
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
}

describe('source agent', () => {
  it('compiles the options itself: a flag out of range is refused there, exit 2', async () => {
    const r = await ferry(['migrate', '4242', '--to', '127.0.0.1:1', '--max-rounds', '0', '--via', agent!.address, '--json']);
    expect(r).toMatchObject({ code: 2, error: { code: 'FERRY-0001', key: 'BAD_ARGUMENT' } });
  });

  it('refuses an unknown pid before touching anything, exit 2', async () => {
    const r = await ferry(['migrate', '4194303', '--to', '127.0.0.1:1', '--via', agent!.address, '--json']);
    expect(r).toMatchObject({ code: 2, error: { code: 'FERRY-1001', key: 'TASK_NOT_FOUND' } });
  });

  it('listens on loopback only', async () => {
    await expectFerryRejection(startSourceAgent({ listen: { host: '10.77.0.1', port: 0 }, log: silentLogger }), 'INSECURE_LISTEN_REFUSED');
  });
});
