/**
 * The source's channel to the dest comes back within seconds of the dest's return, however long it was gone
 * (issue 12: a post-copy fill waits on it while the copy faults): grpc-js's reconnect backoff (up to 120 s by
 * default) is bounded, and an attempt stuck connecting (its SYN lost while the link was down: here a listener
 * that accepts and never speaks) is replaced by a new channel. Real gRPC on 127.0.0.1.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CHANNEL_OPTIONS, ferryProto } from '../../shared/transport/proto.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { DestClient } from '../../source-agent/dest-client.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function grpcDest(port = 0): Promise<number> {
  const server = new grpc.Server(CHANNEL_OPTIONS);
  server.addService(ferryProto().Dest.service, {});
  const bound = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  cleanups.push(() => new Promise<void>((r) => server.tryShutdown(() => r())));
  return bound;
}

async function freePort(): Promise<number> {
  const s = createServer();
  const port = await new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port)));
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Accepts and never answers; the accepted sockets outlive the listener (as a lost SYN leaves an attempt hanging). */
async function silentListener(port: number): Promise<{ close(): Promise<void> }> {
  const sockets: Socket[] = [];
  const s: Server = createServer((sock) => sockets.push(sock));
  await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', () => resolve()));
  cleanups.push(() => {
    for (const x of sockets) x.destroy();
  });
  // close() stops listening at once; its callback would wait for the accepted sockets, which stay.
  return {
    close: () => {
      s.close();
      return Promise.resolve();
    },
  };
}

function client(port: number): DestClient {
  const c = new DestClient(`127.0.0.1:${port}`, INSECURE_LOOPBACK);
  cleanups.push(() => c.close());
  return c;
}

describe('the dest client reconnects promptly (issue 12)', () => {
  it('bounds the reconnect backoff: a dest back after failing attempts is connected within ~1 s', async () => {
    expect(CHANNEL_OPTIONS['grpc.max_reconnect_backoff_ms']).toBeLessThanOrEqual(1_000);
    const port = await freePort();
    const c = client(port);
    // Several seconds of refused attempts: unbounded, grpc-js would now back off for 4 s and more.
    expect(await c.whenConnected(5_000)).toBe(false);
    await grpcDest(port);
    const t0 = Date.now();
    expect(await c.whenConnected(10_000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1_500);
  }, 20_000);

  it('gives up an attempt stuck connecting and dials again on a new channel', async () => {
    const port = await freePort();
    const silent = await silentListener(port);
    const c = client(port);
    expect(await c.whenConnected(1_000)).toBe(false);
    // The attempt hangs on the silent listener; the real dest comes up on the same port.
    await silent.close();
    await grpcDest(port);
    // Asked as the fill and the commit ask: in waits of 2 s, each shorter than the attempt's allowance.
    const t0 = Date.now();
    let connected = false;
    while (!connected && Date.now() - t0 < 10_000) connected = await c.whenConnected(2_000);
    expect(connected).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5_000);
  }, 20_000);
});
