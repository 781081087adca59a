/**
 * Page channels under mutual TLS (issue 15), against a real dest agent on 127.0.0.1:0: pages stored over two
 * channels with the source's own certificate; the token bound to the peer that opened the session (another
 * certified, allowed source presenting it is told there is no such session), and a dialer without a client
 * certificate or with one of another CA cut at the handshake, the session untouched; a stopping agent leaves no
 * channel and no listener. Needs openssl, not root.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDestAgent, type DestAgent } from '../../dest-agent/dest-agent.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { silentLogger } from '../../shared/logging/logger.js';
import type { IssuedCertificate } from '../../shared/transport/certificate-authority.js';
import type * as m from '../../shared/transport/messages.js';
import { compileTransportSecurity, type TransportSecurity } from '../../shared/transport/transport-security.js';
import { DestClient } from '../../source-agent/dest-client.js';
import { PageChannelStream } from '../../source-agent/page-channel/page-channel-stream.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';
import { createTestPki } from '../../testbed/test-pki.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { handBatch } from '../support/dest-grpc.js';

const runnable = canRun('page channel TLS tests', hasCommand('openssl'));
const TD = 'channel.test';
const TASK = 1;

let base: string;
let agent: DestAgent | undefined;
let workDir: string;
const certs: Record<string, IssuedCertificate> = {};
const ids: Record<string, string> = {};

const security = (cert: IssuedCertificate, roles: ('client' | 'server')[], allowPeers?: string[]): TransportSecurity =>
  compileTransportSecurity({ certFile: cert.certFile, keyFile: cert.keyFile, caFile: cert.caFile, allowPeers }, roles);

describe.skipIf(!runnable)('page channels over mutual TLS', () => {
  beforeAll(async () => {
    base = mkdtempSync(join(tmpdir(), 'ferry-channel-tls-'));
    const pki = await createTestPki(base, TD);
    const otherCa = await createTestPki(base, TD);
    [certs.dest, certs.source, certs.second, certs.foreign] = await Promise.all([
      pki.issue('dest', { ipAddresses: ['127.0.0.1'] }),
      pki.issue('source'),
      pki.issue('second'),
      otherCa.issue('source'),
    ]);
    ids.source = pki.idOf('source');
    ids.second = pki.idOf('second');
    ids.dest = pki.idOf('dest');
    workDir = join(base, 'work');
    agent = await startDestAgent({ listen: { host: '127.0.0.1', port: 0 }, workDir, security: security(certs.dest, ['server'], [ids.source, ids.second]), log: silentLogger });
  }, 60_000);

  afterAll(async () => {
    await agent?.close();
    rmSync(base, { recursive: true, force: true });
  });

  async function prepared(as: string): Promise<{ client: DestClient; id: string; answer: m.PrepareResponse; sec: TransportSecurity }> {
    const sec = security(certs[as]!, ['client'], [ids.dest!]);
    const client = new DestClient(agent!.address, sec);
    await client.connect(5_000);
    const id = randomUUID();
    const answer = await client.prepare({ migrationId: id, epoch: '1', protocolVersion: 1, requiredPids: [], expectedBytes: String(16 << 20), taskName: 'tls', pageChannels: 2 });
    return { client, id, answer, sec };
  }

  const open = (answer: m.PrepareResponse, id: string, sec: TransportSecurity): Promise<PageChannelStream> =>
    PageChannelStream.open(
      { dest: { host: '127.0.0.1', port: 0 }, port: answer.pageChannelPort!, token: answer.pageChannelToken!, channels: answer.pageChannels!, security: sec },
      { migrationId: id, epoch: '1', windowBytes: 4 << 20, signal: new AbortController().signal, phase: () => 'precopy' },
    );

  it('stores pages sent over two TLS channels, and closes them on finish', async () => {
    const p = await prepared('source');
    try {
      const s = await open(p.answer, p.id, p.sec);
      for (let b = 0; b < 8; b++) await s.send(TASK, 0, handBatch(Array.from({ length: 32 }, (_, i) => 1 + b * 32 + i)));
      await s.finish();
      expect(s.openSockets).toBe(0);
      expect(s.storedBytes).toBe(256 * PAGE_SIZE);
      expect(readFileSync(join(p.answer.workDir, 'pages', `task-${TASK}.L0.pages`)).length).toBe(256 * PAGE_SIZE);
    } finally {
      p.client.close();
    }
  });

  it("refuses another allowed source presenting the session's token (PAGE_CHANNEL_TOKEN_INVALID): the token is bound to its peer", async () => {
    const p = await prepared('source');
    const other = security(certs.second!, ['client'], [ids.dest!]);
    try {
      await expectFerryRejection(open(p.answer, p.id, other), 'PAGE_CHANNEL_TOKEN_INVALID');
      // The session's own source still opens its channels.
      const s = await open(p.answer, p.id, p.sec);
      await s.send(TASK, 0, handBatch([1, 2, 3]));
      await s.finish();
    } finally {
      p.client.close();
    }
  });

  it('cuts a dialer without a client certificate, or with one of another CA, at the handshake; the session is untouched', async () => {
    const p = await prepared('source');
    try {
      const dial = (opts: tls.ConnectionOptions): Promise<string> =>
        new Promise((resolve) => {
          const sock = tls.connect({ host: '127.0.0.1', port: p.answer.pageChannelPort!, ca: readFileSync(certs.dest!.caFile), servername: 'ferry-agent', checkServerIdentity: () => undefined, ...opts });
          sock.on('data', () => resolve('data'));
          sock.on('error', (e) => resolve(`error: ${e.message}`));
          sock.on('close', () => resolve('closed'));
        });
      expect(await dial({})).not.toBe('data');
      expect(await dial({ cert: readFileSync(certs.foreign!.certFile), key: readFileSync(certs.foreign!.keyFile) })).not.toBe('data');
      expect(existsSync(p.answer.workDir)).toBe(true);
      const s = await open(p.answer, p.id, p.sec);
      await s.send(TASK, 0, handBatch([5]));
      await s.finish();
    } finally {
      p.client.close();
    }
  });

  it('a stopping agent closes its channels and its page-channel listener: the source fails (PAGE_STREAM_FAILED), the port is closed', async () => {
    const p = await prepared('source');
    const s = await open(p.answer, p.id, p.sec);
    await s.send(TASK, 0, handBatch([1, 2]));
    await s.flush();
    const port = agent!.pageChannelPort;
    expect(port).toBe(p.answer.pageChannelPort);
    p.client.close();
    await agent!.close();
    agent = undefined;
    await expectFerryRejection(s.send(TASK, 0, handBatch([3])).then(() => s.flush()), 'PAGE_STREAM_FAILED');
    expect(s.openSockets).toBe(0);
    const refused = await new Promise<string>((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port }, () => resolve('connected'));
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
  });
});
