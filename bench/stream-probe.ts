/**
 * The data-plane benchmark's transport ceilings: one Node stream between two Node processes over the veth, in
 * 1 MiB writes, over mutual TLS with the hosts' own certificates (the agents' kind: the testbed's CA, SPIFFE
 * identities, IP SANs) or plain TCP. Run compiled (build/bench/bench/stream-probe.js) with nsenter on each side.
 *
 *   node stream-probe.js recv ADDRESS [TLS_DIR]           listens on ADDRESS:0, prints {"port":N} on stderr,
 *                                                         takes one connection, discards what comes, then
 *                                                         prints {"bytes","ms","cpuUs"} on stdout
 *   node stream-probe.js send ADDRESS PORT BYTES [TLS_DIR] writes BYTES in 1 MiB writes, prints the same
 *
 * ms: the receiver's first byte to its last (no process start or handshake in it); cpuUs: this process's
 * user + system CPU over the whole transfer (process.cpuUsage), for CPU seconds per GiB beside Ferry's.
 */
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as netConnect, createServer as netServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as tlsServer, type TLSSocket } from 'node:tls';
import { acceptOne } from './accept-one.js';

const WRITE_BYTES = 1 << 20;
const IDLE_TIMEOUT_MS = 60_000;

function fail(message: string): never {
  process.stderr.write(`stream-probe: ${message}\n`);
  process.exit(1);
}

function tlsFiles(dir: string): { cert: Buffer; key: Buffer; ca: Buffer } {
  return { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')), ca: readFileSync(join(dir, 'ca.pem')) };
}

function cpuUs(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return u.user + u.system;
}

async function receive(address: string, tlsDir: string | undefined): Promise<void> {
  const cpu0 = process.cpuUsage();
  // Mutual TLS as the agents do it: the client must show a certificate of the same CA.
  const socket = tlsDir
    ? await acceptOne(tlsServer({ ...tlsFiles(tlsDir), requestCert: true, rejectUnauthorized: true }), address, 'secureConnection')
    : await acceptOne(netServer({ noDelay: true }), address);
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle for too long')));
  let bytes = 0;
  let first = 0;
  let last = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      last = performance.now();
      if (bytes === 0) first = last;
      bytes += chunk.length;
    });
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  socket.destroy();
  process.stdout.write(`${JSON.stringify({ bytes, ms: last - first, cpuUs: cpuUs(cpu0) })}\n`);
}

async function send(address: string, port: number, total: number, tlsDir: string | undefined): Promise<void> {
  const cpu0 = process.cpuUsage();
  const socket: Socket | TLSSocket = tlsDir ? tlsConnect({ host: address, port, ...tlsFiles(tlsDir) }) : netConnect({ host: address, port, noDelay: true });
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle for too long')));
  await new Promise<void>((resolve, reject) => {
    socket.once(tlsDir ? 'secureConnect' : 'connect', resolve);
    socket.once('error', reject);
  });
  // One buffer for every write: what the stream costs, not what making data costs. Random, so that nothing on
  // the way could shortcut it.
  const buf = randomFillSync(Buffer.allocUnsafe(WRITE_BYTES));
  const t0 = performance.now();
  let sent = 0;
  while (sent < total) {
    const n = Math.min(WRITE_BYTES, total - sent);
    sent += n;
    if (!socket.write(n === WRITE_BYTES ? buf : buf.subarray(0, n))) {
      await new Promise<void>((resolve, reject) => {
        const onError = (e: Error): void => reject(e);
        socket.once('error', onError);
        socket.once('drain', () => {
          socket.off('error', onError);
          resolve();
        });
      });
    }
  }
  await new Promise<void>((resolve, reject) => {
    socket.once('close', () => resolve());
    socket.once('error', reject);
    socket.end();
  });
  process.stdout.write(`${JSON.stringify({ bytes: sent, ms: performance.now() - t0, cpuUs: cpuUs(cpu0) })}\n`);
}

const [mode, address, ...rest] = process.argv.slice(2);
if (mode === 'recv' && address) {
  receive(address, rest[0]).catch((e: unknown) => fail((e as Error).message));
} else if (mode === 'send' && address && rest[0] && /^\d+$/.test(rest[0]) && rest[1] && /^\d+$/.test(rest[1])) {
  send(address, Number(rest[0]), Number(rest[1]), rest[2]).catch((e: unknown) => fail((e as Error).message));
} else {
  fail('usage: stream-probe.js recv ADDRESS [TLS_DIR] | send ADDRESS PORT BYTES [TLS_DIR]');
}
