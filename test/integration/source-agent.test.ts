/**
 * `ferry migrate --via` against a real source agent on its Unix socket (the CLI in this process, as root):
 * the options travel as given and are compiled by the agent, whose refusals come back with their codes and
 * exit codes as if the CLI had run the migration; the dest allow-list holds for Migrate and Check.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/main.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { silentLogger } from '../../shared/logging/logger.js';
import type { CheckRequest, CheckResponse } from '../../shared/transport/messages.js';
import { spawn } from 'node:child_process';
import { CHANNEL_OPTIONS, ferryProto } from '../../shared/transport/proto.js';
import { startSourceAgent, type SourceAgent } from '../../source-agent/source-agent.js';
import { createTestPki } from '../../testbed/test-pki.js';
import { compileTransportSecurity, INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { canRun, isRoot } from '../../testbed/requirements.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

const ALLOWED = '127.0.0.1:1';
let dir = '';
let agent: SourceAgent | undefined;
const root = canRun('source agent', isRoot());

beforeAll(async () => {
  if (!root) return;
  dir = mkdtempSync(join(tmpdir(), 'ferry-src-'));
  // The agent dials dests over mutual TLS: give it a certificate of its own.
  const pki = await createTestPki(dir);
  const cert = await pki.issue('source');
  const dialSecurity = compileTransportSecurity({ certFile: cert.certFile, keyFile: cert.keyFile, caFile: cert.caFile }, ['client']);
  agent = await startSourceAgent({ socket: join(dir, 'source.sock'), allowDests: [ALLOWED], dialSecurity, imagesRoot: join(dir, 'images'), journalDir: join(dir, 'journal'), log: silentLogger });
});
afterAll(async () => {
  await agent?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI in this process and returns its exit code, the error line of --json and every line. */
async function ferry(argv: string[]): Promise<{ code: number; error: { code: string; key: string } | undefined; lines: Record<string, unknown>[] }> {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((l: unknown) => void out.push(String(l)));
  const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
  try {
    const code = await main(argv);
    const lines = out.map((l) => JSON.parse(l) as { kind: string; error?: { code: string; key: string } });
    return { code, error: lines.find((l) => l.kind === 'error')?.error, lines };
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
}

/** Check over the agent's socket, as a raw client would call it. */
function check(dest: string, more: Partial<CheckRequest> = {}): Promise<CheckResponse> {
  const Source = ferryProto().Source;
  const client = new Source(`unix:${agent!.socket}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as grpc.Client & {
    Check: (r: object, o: object, cb: (e: grpc.ServiceError | null, r: CheckResponse) => void) => void;
  };
  return new Promise((done, fail) =>
    client.Check({ dest, ...more }, { deadline: Date.now() + 20_000 }, (e, r) => {
      client.close();
      if (e) fail(fromServiceError(e, new FerryError('INTERNAL', { detail: e.message })));
      else done(r);
    }),
  );
}

describe.skipIf(!root)('source agent', () => {
  it('compiles the options itself: a flag out of range is refused there, exit 2', async () => {
    const r = await ferry(['migrate', '4242', '--to', ALLOWED, '--max-rounds', '0', '--via', agent!.socket, '--json']);
    expect(r).toMatchObject({ code: 2, error: { code: 'FERRY-0001', key: 'BAD_ARGUMENT' } });
  });

  it('refuses an unknown pid before touching anything, exit 2', async () => {
    const r = await ferry(['migrate', '4194303', '--to', ALLOWED, '--via', agent!.socket, '--json']);
    expect(r).toMatchObject({ code: 2, error: { code: 'FERRY-1001', key: 'TASK_NOT_FOUND' } });
  });

  it('refuses a Migrate to a dest not on its --allow-dest list, even for root, exit 2', async () => {
    const r = await ferry(['migrate', String(process.pid), '--to', '127.0.0.1:2', '--via', agent!.socket, '--json']);
    expect(r).toMatchObject({ code: 2, error: { code: 'FERRY-0025', key: 'DEST_NOT_ALLOWED' } });
  });

  it('refuses a Check of a dest not on the list, and checks one that is', async () => {
    await expectFerryRejection(check('127.0.0.1:2'), 'DEST_NOT_ALLOWED');
    const r = await check(ALLOWED);
    expect(r.source?.hostname).toBeTruthy();
    expect(r.destProblem).toMatch(/FERRY-1006/); // nothing listens there: the agent tried, as allowed
  });

  it('ferry check PID --via runs the preflight in the agent (the Check call carries the pid) and prints its findings', async () => {
    // A session leader of its own (setsid execs sleep), as CRIU needs; a child of this process, removed after.
    const task = spawn('setsid', ['sleep', '30'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 200));
      const r = await ferry(['check', String(task.pid), '--via', agent!.socket, '--json']);
      const out = r.lines.at(-1) as { ok: boolean; via: string; pid: number; preflight: { check: string; verdict: string; code: string }[] };
      expect(r.code, JSON.stringify(out)).toBe(0);
      expect(out).toMatchObject({ ok: true, via: agent!.socket, pid: task.pid });
      expect(out.preflight.map((f) => f.check)).toContain('mount-paths');
      expect(out.preflight.find((f) => f.check === 'capabilities')).toMatchObject({ verdict: 'ok', code: 'FERRY-1201' });
      // Raw calls: the agent compiles the options itself and refuses what the CLI would have.
      await expectFerryRejection(check('', { pid: task.pid!, allow: ['vfork'] }), 'BAD_ARGUMENT');
      await expectFerryRejection(check('', { pid: task.pid!, tcpEstablished: 'maybe' }), 'BAD_ARGUMENT');
      await expectFerryRejection(check('', { pid: 4194303 }), 'TASK_NOT_FOUND');
    } finally {
      task.kill('SIGKILL');
    }
    // With --via the agent dials with its own certificate: TLS flags here are a usage error.
    const tls = await ferry(['check', '--via', agent!.socket, '--insecure', '--json']);
    expect(tls).toMatchObject({ code: 2, error: { key: 'BAD_ARGUMENT' } });
  });

  it('--via takes a socket path: HOST:PORT is refused with a hint, exit 2', async () => {
    const r = await ferry(['migrate', '4242', '--to', ALLOWED, '--via', '127.0.0.1:7071', '--json']);
    expect(r).toMatchObject({ code: 2, error: { key: 'BAD_ARGUMENT' } });
  });

  it('says so when no agent answers on the path, exit 1', async () => {
    const r = await ferry(['migrate', '4242', '--to', ALLOWED, '--via', join(dir, 'nobody-here.sock'), '--json']);
    expect(r).toMatchObject({ code: 1, error: { code: 'FERRY-0022', key: 'SOURCE_AGENT_UNREACHABLE' } });
  });

  it('no longer listens on TCP: --listen is refused with a hint, exit 2', async () => {
    const r = await ferry(['source-agent', '--listen', '127.0.0.1:7071', '--json']);
    expect(r).toMatchObject({ code: 2, error: { key: 'BAD_ARGUMENT' } });
  });

  it('removes at start the images dirs that killed agents left (an unheld lease), and nothing else', async () => {
    const imagesRoot = join(dir, 'images-swept');
    const leftover = `${randomUUID()}-0123456789ab`;
    mkdirSync(join(imagesRoot, leftover), { recursive: true, mode: 0o700 });
    writeFileSync(join(imagesRoot, leftover, 'pages-1.img'), 'x');
    writeFileSync(join(imagesRoot, `${leftover}.lease`), '');
    mkdirSync(join(imagesRoot, 'not-ferrys'));
    const a = await startSourceAgent({ socket: join(dir, 'swept.sock'), allowDests: [], dialSecurity: INSECURE_LOOPBACK, imagesRoot, journalDir: join(dir, 'journal'), log: silentLogger });
    await a.close();
    expect(readdirSync(imagesRoot)).toEqual(['not-ferrys']);
  });

  it('serves /metrics on loopback only', async () => {
    await expectFerryRejection(
      startSourceAgent({ socket: join(dir, 'm.sock'), allowDests: [], dialSecurity: INSECURE_LOOPBACK, metrics: { host: '10.77.0.1', port: 0 }, journalDir: join(dir, 'journal'), log: silentLogger }),
      'INSECURE_LISTEN_REFUSED',
    );
  });
});
