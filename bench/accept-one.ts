/**
 * The receiving end of the benchmark's byte pipes (tcp-pipe.ts, stream-probe.ts): listen on ADDRESS:0, print
 * {"port":N} on stderr for the driver, take one connection (a TLS server's once its handshake is done) and stop
 * listening.
 */
import type { Server, Socket } from 'node:net';

export function acceptOne(server: Server, address: string, event: 'connection' | 'secureConnection' = 'connection'): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    server.once('error', reject);
    server.once(event, (s: Socket) => {
      server.close();
      resolve(s);
    });
    server.listen(0, address, () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port'));
      process.stderr.write(`${JSON.stringify({ port: addr.port })}\n`);
    });
  });
}
