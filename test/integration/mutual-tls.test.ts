/**
 * Mutual TLS between a source (DestClient, or a raw gRPC client for certificates the CLI would refuse to load)
 * and a real dest agent on 127.0.0.1:0: every way of being the wrong peer is refused with its code on the
 * caller's side, logged and counted on the agent's side, and leaves nothing in the dest's work dir; a renewed
 * server certificate is served to new connections without a restart. Needs openssl, not root.
 */
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDestAgent, type DestAgent } from '../../dest-agent/dest-agent.js';
import type { ErrorKey } from '../../shared/errors/codes.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError } from '../../shared/errors/grpc-status.js';
import { createLogger, type Logger } from '../../shared/logging/logger.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import type { IssuedCertificate } from '../../shared/transport/certificate-authority.js';
import type * as m from '../../shared/transport/messages.js';
import { CHANNEL_OPTIONS, ferryProto } from '../../shared/transport/proto.js';
import { compileTransportSecurity, INSECURE_LOOPBACK, type TlsSecurity, type TransportSecurity } from '../../shared/transport/transport-security.js';
import { DestClient } from '../../source-agent/dest-client.js';
import { canRun, hasCommand } from '../../testbed/requirements.js';
import { createTestPki, type TestPki } from '../../testbed/test-pki.js';
import { expectFerryError, expectFerryRejection } from '../support/ferry-error-expect.js';

const runnable = canRun('mutual TLS tests', hasCommand('openssl'));
const TD = 'tls.test';

let base: string;
let pki: TestPki;
let otherCa: TestPki;
const certs: Record<string, IssuedCertificate> = {};

interface RunningDest {
  agent: DestAgent;
  workDir: string;
  logs: Record<string, unknown>[];
  /** Entries of the work dir right after start (the agent's own, e.g. logs/). */
  initial: string[];
  stop(): Promise<void>;
}
const running: RunningDest[] = [];

function capturingLogger(into: Record<string, unknown>[]): Logger {
  return createLogger({ side: 'dest' }, (line) => void into.push(JSON.parse(line) as Record<string, unknown>), 'debug');
}

function tls(cert: IssuedCertificate, roles: ('client' | 'server')[], allowPeers?: string[], refreshIntervalMs?: number): TransportSecurity {
  return compileTransportSecurity({ certFile: cert.certFile, keyFile: cert.keyFile, caFile: cert.caFile, allowPeers, refreshIntervalMs }, roles);
}

async function startDest(security: TransportSecurity): Promise<RunningDest> {
  const workDir = mkdtempSync(join(base, 'dest-'));
  const logs: Record<string, unknown>[] = [];
  const agent = await startDestAgent({ listen: { host: '127.0.0.1', port: 0 }, workDir, security, metrics: { host: '127.0.0.1', port: 0 }, log: capturingLogger(logs) });
  const d: RunningDest = {
    agent,
    workDir,
    logs,
    initial: readdirSync(workDir),
    stop: async () => {
      await agent.close();
      rmSync(workDir, { recursive: true, force: true });
    },
  };
  running.push(d);
  return d;
}

const PEER_INFO: m.PeerInfo = {
  ferryVersion: '0.1.0',
  protocolVersions: [1],
  pageSize: PAGE_SIZE,
  arch: process.arch,
  kernel: 'test',
  hostname: 'tls-test',
  trackers: ['hash'],
  criuVersion: '',
  criuProblem: 'not probed in this test',
  features: [],
};

const prepareRequest = (): m.PrepareRequest => ({ migrationId: randomUUID(), epoch: '1', protocolVersion: 1, requiredPids: [], expectedBytes: '0', taskName: 'tls-test' });

/** A Dest client built by hand: any certificate, even one DestClient would refuse to load. */
function rawClient(address: string, creds: grpc.ChannelCredentials): grpc.Client & Record<string, (...a: unknown[]) => unknown> {
  return new (ferryProto().Dest)(address, creds, { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': 'dest' }) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
}

function rawCall(client: ReturnType<typeof rawClient>, method: 'Negotiate' | 'Prepare', req: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    (client[method] as (r: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => void)(req, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) =>
      err ? reject(fromServiceError(err, new FerryError('DEST_UNREACHABLE', { detail: `${err.code} ${err.details}` }))) : resolve(res),
    );
  });
}

/** Plain grpc-js TLS credentials: trusts `ca`'s CA file, presents `cert` when given. */
function sslCreds(ca: IssuedCertificate, cert?: IssuedCertificate): grpc.ChannelCredentials {
  const caPem = readFileSync(ca.caFile);
  return cert ? grpc.credentials.createSsl(caPem, readFileSync(cert.keyFile), readFileSync(cert.certFile)) : grpc.credentials.createSsl(caPem);
}

/** TLS settings that serve `served`'s certificate and key although the start-up check would refuse them. */
function servingAnyway(served: IssuedCertificate, allowPeers: string[]): TlsSecurity {
  const good = tls(certs.dest!, ['server'], allowPeers) as TlsSecurity;
  const material = { ...good.material, cert: readFileSync(served.certFile), key: readFileSync(served.keyFile) };
  return { ...good, material, refreshIntervalMs: 3_600_000 };
}

async function metric(d: RunningDest, sample: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${d.agent.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

/** The caller's view (a coded error), the agent's (a log line and the counter) and the work dir (untouched). */
async function expectRefusedEverywhere(d: RunningDest, call: () => Promise<unknown>, key: ErrorKey, code: string): Promise<void> {
  const before = await metric(d, `ferry_dest_peer_refusals_total{code="${code}"}`);
  const files = readdirSync(d.workDir).sort();
  await expectFerryRejection(call(), key);
  expect(await metric(d, `ferry_dest_peer_refusals_total{code="${code}"}`)).toBe(before + 1);
  expect(d.logs.some((l) => l.msg === 'call refused' && l.code === code)).toBe(true);
  expect(readdirSync(d.workDir).sort()).toEqual(files);
}

/** A Prepare from a raw client presenting `cert` (or none), refused by `d` with `key` everywhere. */
async function expectRawPrepareRefused(d: RunningDest, cert: IssuedCertificate | undefined, key: ErrorKey, code: string): Promise<void> {
  const client = rawClient(d.agent.address, sslCreds(certs.dest!, cert));
  try {
    await expectRefusedEverywhere(d, () => rawCall(client, 'Prepare', prepareRequest()), key, code);
  } finally {
    client.close();
  }
}

beforeAll(async () => {
  if (!runnable) return;
  base = mkdtempSync(join(tmpdir(), 'ferry-tls-test-'));
  pki = await createTestPki(base, TD);
  // Another CA of the very same trust domain: its certificates name allowed identities, and must still fail.
  otherCa = await createTestPki(base, TD);
  const day = 86_400_000;
  const issued = await Promise.all([
    pki.issue('dest', { ipAddresses: ['127.0.0.1'] }),
    pki.issue('source'),
    pki.issue('stranger'),
    otherCa.issue('source'),
    pki.issue('source', { out: join(base, 'expired-source'), notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) }),
    pki.issue('source', { out: join(base, 'two-uris'), extraUris: [pki.idOf('other')] }),
    otherCa.issue('dest', { ipAddresses: ['127.0.0.1'] }),
    pki.issue('dest', { out: join(base, 'expired-dest'), ipAddresses: ['127.0.0.1'], notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) }),
    pki.issue('dest', { out: join(base, 'dest-elsewhere'), ipAddresses: ['127.0.0.2'] }),
    pki.issue('impostor', { ipAddresses: ['127.0.0.1'] }),
  ]);
  const names = ['dest', 'source', 'stranger', 'forged', 'expiredSource', 'twoUris', 'destOtherCa', 'destExpired', 'destElsewhere', 'impostor'];
  names.forEach((n, i) => (certs[n] = issued[i]!));
}, 60_000);

afterAll(async () => {
  for (const d of running) await d.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe.runIf(runnable)('mutual TLS: the dest refuses the wrong source', () => {
  let dest: RunningDest;
  beforeAll(async () => {
    dest = await startDest(tls(certs.dest!, ['server'], [pki.idOf('source')]));
  });

  it('serves an allowed source: Negotiate and Prepare pass, and the session is opened', async () => {
    const client = new DestClient(dest.agent.address, tls(certs.source!, ['client'], [pki.idOf('dest')]));
    try {
      await client.connect(5_000);
      expect((await client.negotiate({ source: PEER_INFO })).dest.protocolVersions).toContain(1);
      const req = prepareRequest();
      await client.prepare(req);
      await client.abort({ migrationId: req.migrationId, epoch: req.epoch, reason: 'test' });
    } finally {
      client.close();
    }
    expect(dest.logs.some((l) => l.msg === 'session requested by a verified source' && l.source === pki.idOf('source'))).toBe(true);
  });

  it('no client certificate: CERT_REFUSED_BY_PEER, nothing written', async () => {
    await expectRawPrepareRefused(dest, undefined, 'CERT_REFUSED_BY_PEER', 'FERRY-1103');
  });

  it("another CA's certificate (naming an allowed identity): CERT_REFUSED_BY_PEER, nothing written", async () => {
    await expectRawPrepareRefused(dest, certs.forged, 'CERT_REFUSED_BY_PEER', 'FERRY-1103');
  });

  it('an expired certificate: refused by the dest (CERT_REFUSED_BY_PEER), and by the source before it dials (TLS_CONFIG_INVALID)', async () => {
    await expectRawPrepareRefused(dest, certs.expiredSource, 'CERT_REFUSED_BY_PEER', 'FERRY-1103');
    const e = expectFerryError(() => tls(certs.expiredSource!, ['client']), 'TLS_CONFIG_INVALID');
    expect(e.detail).toMatch(/expired/);
  });

  it('a valid certificate not on the allow-list: PEER_NOT_ALLOWED, nothing written', async () => {
    const client = new DestClient(dest.agent.address, tls(certs.stranger!, ['client'], [pki.idOf('dest')]));
    try {
      await client.connect(5_000); // the handshake is fine: the CA issued it
      await expectRefusedEverywhere(dest, () => client.prepare(prepareRequest()), 'PEER_NOT_ALLOWED', 'FERRY-1104');
      await expectFerryRejection(client.negotiate({ source: PEER_INFO }), 'PEER_NOT_ALLOWED');
    } finally {
      client.close();
    }
  });

  it('a certificate with two URI SANs: PEER_IDENTITY_INVALID on the dest, TLS_CONFIG_INVALID on the source', async () => {
    await expectRawPrepareRefused(dest, certs.twoUris, 'PEER_IDENTITY_INVALID', 'FERRY-1105');
    expectFerryError(() => tls(certs.twoUris!, ['client']), 'TLS_CONFIG_INVALID');
  });

  it('a plaintext source: TRANSPORT_MISMATCH before any call', async () => {
    const files = readdirSync(dest.workDir).sort();
    const client = new DestClient(dest.agent.address, INSECURE_LOOPBACK);
    try {
      await expectFerryRejection(client.connect(1_500), 'TRANSPORT_MISMATCH');
    } finally {
      client.close();
    }
    expect(readdirSync(dest.workDir).sort()).toEqual(files);
  });
});

describe.runIf(runnable)('mutual TLS: a session belongs to the source that opened it', () => {
  it('another allowed source that knows the id and the epoch finds nothing to commit, abort or restore', async () => {
    const dest = await startDest(tls(certs.dest!, ['server'], [pki.idOf('source'), pki.idOf('stranger')]));
    const owner = new DestClient(dest.agent.address, tls(certs.source!, ['client'], [pki.idOf('dest')]));
    const other = new DestClient(dest.agent.address, tls(certs.stranger!, ['client'], [pki.idOf('dest')]));
    try {
      await owner.connect(5_000);
      await other.connect(5_000);
      const req = prepareRequest();
      await owner.prepare(req);
      const ids = { migrationId: req.migrationId, epoch: req.epoch };
      await expectFerryRejection(other.commit(ids), 'SESSION_NOT_FOUND');
      await expectFerryRejection(other.restore({ ...ids, pages: [], timeoutMs: 1000, commitLeaseMs: 1000 }), 'SESSION_NOT_FOUND');
      expect(await other.abort({ ...ids, reason: 'not mine' })).toMatchObject({ existed: false });
      // A Prepare of the same id by the other source is a conflict, not a takeover.
      await expectFerryRejection(other.prepare(req), 'SESSION_CONFLICT');
      expect(await owner.abort({ ...ids, reason: 'test' })).toMatchObject({ existed: true });
    } finally {
      owner.close();
      other.close();
    }
  });
});

describe.runIf(runnable)('mutual TLS: the source refuses the wrong dest', () => {
  const asSource = (allow = [pki.idOf('dest')]): TransportSecurity => tls(certs.source!, ['client'], allow);

  async function connectTo(destCert: IssuedCertificate, key: ErrorKey, security = asSource()): Promise<FerryError> {
    const d = await startDest(tls(destCert, ['server'], [pki.idOf('source')]));
    const client = new DestClient(d.agent.address, security);
    try {
      return await expectFerryRejection(client.connect(1_500), key);
    } finally {
      client.close();
      expect(readdirSync(d.workDir).sort()).toEqual([...d.initial].sort());
    }
  }

  it("a dest certificate of another CA: PEER_CERT_UNTRUSTED", async () => {
    await connectTo(certs.destOtherCa!, 'PEER_CERT_UNTRUSTED');
  });

  it('an expired dest certificate: PEER_CERT_UNTRUSTED (CERT_HAS_EXPIRED)', async () => {
    // The agent would refuse to start on it (TLS_CONFIG_INVALID): served here around that check.
    expectFerryError(() => tls(certs.destExpired!, ['server']), 'TLS_CONFIG_INVALID');
    const d = await startDest(servingAnyway(certs.destExpired!, [pki.idOf('source')]));
    const client = new DestClient(d.agent.address, asSource());
    try {
      const e = await expectFerryRejection(client.connect(1_500), 'PEER_CERT_UNTRUSTED');
      expect(e.message).toMatch(/CERT_HAS_EXPIRED/);
    } finally {
      client.close();
    }
  });

  it('a dest certificate not valid for the address dialed (SAN mismatch): PEER_ADDRESS_MISMATCH', async () => {
    const e = await connectTo(certs.destElsewhere!, 'PEER_ADDRESS_MISMATCH');
    expect(e.detail).toMatch(/127\.0\.0\.1/);
  });

  it("a dest whose identity is not on the source's allow-list: PEER_NOT_ALLOWED", async () => {
    await connectTo(certs.impostor!, 'PEER_NOT_ALLOWED');
  });

  it('a plaintext dest: TRANSPORT_MISMATCH', async () => {
    const d = await startDest(INSECURE_LOOPBACK);
    const client = new DestClient(d.agent.address, asSource());
    try {
      await expectFerryRejection(client.connect(1_500), 'TRANSPORT_MISMATCH');
    } finally {
      client.close();
    }
  });
});

describe.runIf(runnable)('ferry certs', () => {
  it('makes a CA and host certificates with strict modes, the SPIFFE ID and the SANs; refuses a second CA in the same dir', async () => {
    const dir = join(base, 'certs-cli');
    const { main } = await import('../../cli/main.js');
    const quiet = { log: console.log };
    console.log = () => undefined;
    try {
      expect(await main(['certs', 'init', '--dir', dir, '--trust-domain', 'cli.test'])).toBe(0);
      expect(await main(['certs', 'issue', '--dir', dir, '--host', 'b', '--dns', 'b.cli.test', '--ip', '10.0.0.2'])).toBe(0);
      const errors: string[] = [];
      const err = console.error;
      console.error = (l: unknown) => void errors.push(String(l));
      try {
        expect(await main(['certs', 'init', '--dir', dir, '--trust-domain', 'cli.test'])).toBe(2);
        expect(await main(['certs', 'issue', '--dir', dir, '--host', '../b'])).toBe(2);
        expect(await main(['certs', 'issue', '--dir', dir, '--host', 'c', '--dns', '10.0.0.3'])).toBe(2);
      } finally {
        console.error = err;
      }
      expect(errors.every((e) => e.startsWith('ferry: FERRY-0001'))).toBe(true);
    } finally {
      console.log = quiet.log;
    }
    const mode = (p: string): number => statSync(p).mode & 0o777;
    expect([mode(dir), mode(join(dir, 'ca.key')), mode(join(dir, 'hosts/b/key.pem')), mode(join(dir, 'hosts/b/cert.pem'))]).toEqual([0o700, 0o600, 0o600, 0o644]);
    const files = { certFile: join(dir, 'hosts/b/cert.pem'), keyFile: join(dir, 'hosts/b/key.pem'), caFile: join(dir, 'hosts/b/ca.pem') };
    const sec = compileTransportSecurity(files, ['client']);
    expect(sec.kind === 'tls' && sec.material.identity).toEqual({ spiffe: { id: 'spiffe://cli.test/ferry/b', trustDomain: 'cli.test', host: 'b' }, dnsNames: ['b', 'b.cli.test'], ipAddresses: ['10.0.0.2'] });
    expect(sec.kind === 'tls' && sec.allowList.toString()).toBe('spiffe://cli.test/ferry/*'); // a dialer's default: its own trust domain
    // A listener names the peers that may drive it: the trust domain is no default there.
    expectFerryError(() => compileTransportSecurity(files, ['server']), 'BAD_ARGUMENT');
  });
});

describe.runIf(runnable)('mutual TLS: rotation in place', () => {
  /** The serial of the certificate a new connection to `address` is served. */
  function servedSerial(port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
        const serial = s.getPeerCertificate().serialNumber;
        s.destroy();
        resolve(serial);
      });
      s.once('error', reject);
      s.setTimeout(3_000, () => s.destroy(new Error('no handshake within 3 s')));
    });
  }

  async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('a renewed server certificate is served to new connections without a restart; a broken one is not taken', async () => {
    const dir = join(base, 'rotating');
    mkdirSync(dir);
    const first = await pki.issue('dest', { out: dir, ipAddresses: ['127.0.0.1'] });
    const d = await startDest(tls(first, ['server'], [pki.idOf('source')], 100));
    const serial1 = await servedSerial(d.agent.port);
    const early = new DestClient(d.agent.address, tls(certs.source!, ['client'], [pki.idOf('dest')]));
    try {
      await early.connect(5_000);
      await early.negotiate({ source: PEER_INFO });

      await pki.issue('dest', { out: dir, ipAddresses: ['127.0.0.1'] });
      await until('the renewed certificate', async () => (await servedSerial(d.agent.port)) !== serial1);
      const serial2 = await servedSerial(d.agent.port);
      expect(d.logs.some((l) => l.msg === 'TLS certificate rotated')).toBe(true);

      const late = new DestClient(d.agent.address, tls(certs.source!, ['client'], [pki.idOf('dest')]));
      try {
        await late.connect(5_000);
        await late.negotiate({ source: PEER_INFO });
      } finally {
        late.close();
      }
      await early.negotiate({ source: PEER_INFO }); // the connection made before goes on

      // A key that is not the certificate's (a half-done renewal): the last good pair stays served.
      copyFileSync(certs.stranger!.keyFile, join(dir, 'key.pem'));
      await until('the refusal of the broken pair', () => Promise.resolve(d.logs.some((l) => String(l.msg).startsWith('TLS files on disk not taken'))));
      expect(await servedSerial(d.agent.port)).toBe(serial2);
      writeFileSync(join(dir, 'cert.pem'), 'not a certificate');
      await new Promise((r) => setTimeout(r, 300));
      expect(await servedSerial(d.agent.port)).toBe(serial2);
    } finally {
      early.close();
    }
  });

  it("a dialer's next connection presents the certificate on disk now, not the one read at its start", async () => {
    const d = await startDest(tls(certs.dest!, ['server'], [pki.idOf('source')]));
    const dir = join(base, 'rotating-source');
    mkdirSync(dir);
    await pki.issue('source', { out: dir });
    const security = tls({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), caFile: join(dir, 'ca.pem') } as IssuedCertificate, ['client'], [pki.idOf('dest')]);
    const before = new DestClient(d.agent.address, security);
    try {
      await before.connect(5_000);
      await before.negotiate({ source: PEER_INFO });
    } finally {
      before.close();
    }
    // The same host re-issued by another CA, its files replaced in place: the next connection trusts only the
    // new CA, so it refuses the dest's certificate, which proves it started from the files on disk now.
    for (const f of ['cert.pem', 'key.pem']) copyFileSync(join(certs.forged!.certFile, '..', f), join(dir, f));
    copyFileSync(certs.forged!.caFile, join(dir, 'ca.pem'));
    const after = new DestClient(d.agent.address, security);
    try {
      await expectFerryRejection(after.connect(2_000).then(() => after.negotiate({ source: PEER_INFO })), 'PEER_CERT_UNTRUSTED');
    } finally {
      after.close();
    }
  });
});
