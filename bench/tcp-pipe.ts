/**
 * The plain-CRIU baseline's copy of an images directory over the shaped link: a one-connection TCP pipe, run
 * with `nsenter --net=...` on each side (this machine has no nc). It is run compiled (build/bench/bench/
 * tcp-pipe.js), not through the TypeScript loader, so that its start costs what `node` costs.
 *
 *   node tcp-pipe.js recv ADDRESS        listens on ADDRESS:0, prints {"port":N} on stderr, accepts one
 *                                        connection, copies it to stdout, then prints {"bytes":N,"ms":T}
 *                                        on stderr (T: first byte to last)
 *   node tcp-pipe.js send ADDRESS PORT   copies stdin to ADDRESS:PORT
 */
import { createServer, connect } from 'node:net';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { acceptOne } from './accept-one.js';

const IDLE_TIMEOUT_MS = 120_000;

function fail(message: string): never {
  process.stderr.write(`tcp-pipe: ${message}\n`);
  process.exit(1);
}

async function receive(address: string): Promise<void> {
  const socket = await acceptOne(createServer({ noDelay: true }), address);
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle for too long')));
  let bytes = 0;
  let first = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (bytes === 0) first = performance.now();
      bytes += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(socket, count, process.stdout);
  // ms: first byte to last, which is what a link check wants (no process start in it).
  process.stderr.write(`${JSON.stringify({ bytes, ms: bytes > 0 ? performance.now() - first : 0 })}\n`);
}

async function send(address: string, port: number): Promise<void> {
  const socket = connect({ host: address, port, noDelay: true });
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle for too long')));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  await pipeline(process.stdin, socket);
}

const [mode, address, port] = process.argv.slice(2);
if (mode === 'recv' && address) {
  receive(address).catch((e: unknown) => fail((e as Error).message));
} else if (mode === 'send' && address && port && /^\d+$/.test(port)) {
  send(address, Number(port)).catch((e: unknown) => fail((e as Error).message));
} else {
  fail('usage: tcp-pipe.js recv ADDRESS | send ADDRESS PORT');
}
