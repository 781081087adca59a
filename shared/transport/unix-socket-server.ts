/**
 * A gRPC service on a Unix socket whose handlers know who called: each accepted connection's peer is read
 * with SO_PEERCRED/SO_PEERGROUPS (the kernel's record of the connecting process, which it cannot forge), and
 * the connection is handed to a gRPC server of its own whose handlers were made for that caller.
 *
 * Why one small server per connection: grpc-js tells a handler nothing about the socket a call came on
 * (getPeer() is "unknown" on a Unix socket), so any map from a call back to its connection would lean on
 * grpc-js internals. A server per connection needs none: the caller is captured when the handlers are made,
 * and a call cannot reach handlers made for another connection. Connections to a local daemon are few (one
 * per CLI command), so the cost does not matter.
 *
 * Plaintext on purpose: the socket's owner and mode decide who can connect, and the peer credentials who
 * called; TLS would add nothing on a local socket. Its credentials come from credentials.ts like every other.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer, type Socket } from 'node:net';
import { peerCredentials, type PeerCredentials } from '../kernel/peer-credentials.js';
import type { Logger } from '../logging/logger.js';
import { serverCredentials } from './credentials.js';
import { SERVER_OPTIONS } from './proto.js';
import { INSECURE_LOOPBACK } from './transport-security.js';
import { tolerantService, undecodableMessageInterceptor } from './undecodable-messages.js';
import { listenOnSocketPath, type SocketPathOptions } from './unix-socket-path.js';

export interface UnixSocketServerOptions extends SocketPathOptions {
  service: grpc.ServiceDefinition;
  /** The handlers for the calls of one connection, whose caller is `caller`. */
  handlersFor: (caller: PeerCredentials) => grpc.UntypedServiceImplementation;
  log: Logger;
  /** Connections open at once; more are closed on arrival (default 64). */
  maxConnections?: number;
  /** A connection with no call for this long is closed (default 5 minutes). */
  idleMs?: number;
}

export interface UnixSocketServer {
  /** The absolute path of the socket. */
  path: string;
  /** Stops accepting, closes every connection and removes the socket file. */
  close(): void;
}

interface Connection {
  socket: Socket;
  server: grpc.Server;
}

export async function startUnixSocketServer(o: UnixSocketServerOptions): Promise<UnixSocketServer> {
  const connections = new Set<Connection>();
  const net = createServer((socket) => {
    let caller: PeerCredentials;
    try {
      caller = peerCredentials(socket);
    } catch (e) {
      // Fail closed: a caller who cannot be identified gets nothing.
      o.log.warn('refused a connection: its caller cannot be identified', { err: e });
      socket.destroy();
      return;
    }
    const server = new grpc.Server({ ...SERVER_OPTIONS, 'grpc.max_connection_idle_ms': o.idleMs ?? 300_000, 'grpc.enable_channelz': 0 });
    server.addService(tolerantService(o.service), o.handlersFor(caller));
    const conn: Connection = { socket, server };
    connections.add(conn);
    socket.once('close', () => {
      connections.delete(conn);
      server.forceShutdown();
    });
    socket.on('error', () => undefined); // a caller going away is not the agent's error
    server.createConnectionInjector(serverCredentials(INSECURE_LOOPBACK, [undecodableMessageInterceptor('source')])).injectConnection(socket);
  });
  net.maxConnections = o.maxConnections ?? 64;
  const claimed = await listenOnSocketPath(net, o);
  return {
    path: claimed.path,
    close: () => {
      net.close();
      for (const c of connections) {
        c.server.forceShutdown();
        c.socket.destroy();
      }
      claimed.release();
    },
  };
}
