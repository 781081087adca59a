/**
 * The source's Fill call over real gRPC (DestClient.fill, the wire the proto fixes) against a scripted Dest on
 * 127.0.0.1:0, driven by confirm-pages.ts: the requests arrive as sent (the first names the session, count 0),
 * a want is answered before the sweep, the dest's done ends the call, and FILL_FAILED from the dest comes back
 * as its code. The dest's real handler is tested on the dest side; this keeps the source's end honest.
 */
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { toStatus } from '../../shared/errors/grpc-status.js';
import { silentLogger } from '../../shared/logging/logger.js';
import type * as m from '../../shared/transport/messages.js';
import { CHANNEL_OPTIONS, ferryProto } from '../../shared/transport/proto.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { DestClient } from '../../source-agent/dest-client.js';
import { confirmPages, fillUntilDone } from '../../source-agent/pages/confirm-pages.js';
import type { FillManifest } from '../../source-agent/migration/fill-manifests.js';
import { originalHashes, originalPages, PAGE } from '../fakes/fake-original-pages.js';

const servers: grpc.Server[] = [];
const clients: DestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.tryShutdown(() => r()));
});

type Script = (call: grpc.ServerDuplexStream<m.FillRequest, m.FillEvent>, got: m.FillRequest[]) => void;

async function destWithFill(script: Script): Promise<{ client: DestClient; got: m.FillRequest[] }> {
  const got: m.FillRequest[] = [];
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(ferryProto().Dest.service, {
    Fill: (call: grpc.ServerDuplexStream<m.FillRequest, m.FillEvent>) => script(call, got),
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  servers.push(server);
  const client = new DestClient(`127.0.0.1:${port}`, INSECURE_LOOPBACK);
  clients.push(client);
  await client.connect(5_000);
  return { client, got };
}

/** 8 pages from page 0x500 of the fake original; all unconfirmed. */
function manifest(): { manifests: FillManifest[]; read: typeof originalPages } {
  return { manifests: [{ task: 1, hostPid: 99, runs: { starts: [0x500], counts: [8] }, hashes: originalHashes(0x500, 8), unconfirmed: Buffer.from([0xff]), remote: Buffer.alloc(0) }], read: originalPages };
}

const done: m.FillDone = { filledPages: '8', faults: '1', replacedPages: '0', damagedPages: '0', zeroPages: '0', fillUs: '5', faultsWaited: '1' };

describe('the Fill call over gRPC', () => {
  it('sends the session first, answers a want before the sweep, and ends at the dest\'s done', async () => {
    const { client, got } = await destWithFill((call, got) => {
      call.on('data', (r: m.FillRequest) => {
        got.push(r);
        if (got.length === 1) call.write({ wanted: { task: 1, firstIndex: '6', count: 2, bytes: true } });
        if (got.some((x) => x.data.length > 0) && got.reduce((n, x) => n + (x.data.length > 0 ? 0 : x.count), 0) >= 8) {
          call.write({ done });
          call.end();
        }
      });
    });
    const { manifests, read } = manifest();
    const r = await confirmPages((h) => client.fill(h, new AbortController().signal), { migrationId: 'id', epoch: '7', manifests, pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal });
    expect(r.confirmedPages).toBe(8);
    expect(r.done.filledPages).toBe('8');
    expect(got[0]).toMatchObject({ migrationId: 'id', epoch: '7', count: 0 });
    // The want (for bytes: the dest's copy damaged) came back with the original's bytes, whatever the sweep did.
    const wanted = got.find((x) => x.data.length > 0)!;
    expect(wanted).toMatchObject({ task: 1, firstIndex: '6', count: 2 });
    expect(wanted.data.equals(read(0, 0x506, 2)[0]!.data)).toBe(true);
  });

  it('FILL_FAILED from the dest comes back with its code, and fillUntilDone reports the failure without retrying', async () => {
    let calls = 0;
    const { client } = await destWithFill((call) => {
      calls++;
      call.on('data', () => call.emit('error', toStatus(new FerryError('FILL_FAILED', { side: 'dest', detail: 'the pager died' }))));
    });
    const { manifests, read } = manifest();
    const outcome = await fillUntilDone(
      { fill: (h, s) => client.fill(h, s), reachable: (ms) => client.whenConnected(ms) },
      { migrationId: 'id', epoch: '7', manifests, pageSize: PAGE, readPages: read, log: silentLogger, signal: new AbortController().signal, patienceMs: 5_000, unanswered: () => new FerryError('MIGRATION_UNRESOLVED') },
    );
    expect(outcome.kind).toBe('failed');
    expect(outcome.kind === 'failed' && outcome.error.key).toBe('FILL_FAILED');
    expect(calls).toBe(1);
  });

  it('post-copy on the wire: FillReady reaches the source, with_data reaches the dest (issue 12)', async () => {
    // 8 pages at 0x500: 0-1 ready on the dest already, 2-7 unconfirmed, of which 3 and 6 remote (zero hash).
    const hashes = originalHashes(0x500, 8);
    for (const i of [3, 6]) hashes.fill(0, i * 16, (i + 1) * 16);
    const manifests: FillManifest[] = [{ task: 1, hostPid: 99, runs: { starts: [0x500], counts: [8] }, hashes, unconfirmed: Buffer.from([0xff]), remote: Buffer.from([0b0100_1000]) }];
    const { client, got } = await destWithFill((call, got) => {
      call.on('data', (r: m.FillRequest) => {
        got.push(r);
        if (got.length === 1) call.write({ ready: { task: 1, pages: Buffer.from([0b11]) } });
        if (got.length === 2) {
          call.write({ done: { ...done, remotePages: '2', waitP50Us: '120', waitP99Us: '3400', waitMaxUs: '5000' } });
          call.end();
        }
      });
    });
    // A call after the first: its sweep waits for the dest's first event (the FillReady), not a moment longer.
    const t0 = Date.now();
    const r = await confirmPages((h) => client.fill(h, new AbortController().signal), { migrationId: 'id', epoch: '7', manifests, pageSize: PAGE, readPages: originalPages, log: silentLogger, signal: new AbortController().signal, readyWaitMs: 5_000 });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(got[1]).toMatchObject({ task: 1, firstIndex: '2', count: 6 });
    expect([...got[1]!.withData!]).toEqual([0b0001_0010]); // pages 3 and 6 of 2..7: bits 1 and 4
    expect(got[1]!.data.equals(Buffer.concat([originalPages(0, 0x503, 1)[0]!.data, originalPages(0, 0x506, 1)[0]!.data]))).toBe(true);
    expect(r).toMatchObject({ remotePages: 2, confirmedPages: 4, dataBytes: 2 * PAGE });
    expect(r.done).toMatchObject({ remotePages: '2', waitP50Us: '120', waitP99Us: '3400' });
  });
});
