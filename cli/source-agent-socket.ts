/**
 * The CLI's side of `--via PATH`: the source agent's Unix socket. Whether this user may connect is decided by
 * the socket's owner and mode, so the two ways a connection fails before any call (no agent; not allowed)
 * are told apart here, each with its own code, instead of a bare UNAVAILABLE.
 */
import * as grpc from '@grpc/grpc-js';
import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { localSocketCredentials } from '../shared/transport/credentials.js';
import { CHANNEL_OPTIONS, ferryProto } from '../shared/transport/proto.js';

export interface SourceAgentSocket {
  /** The absolute path of the socket. */
  path: string;
  /** The gRPC target: `unix:` and the path. */
  target: string;
}

function code(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

function unreachable(path: string, detail: string): FerryError {
  return new FerryError('SOURCE_AGENT_UNREACHABLE', { side: 'source', sourceState: 'running', message: `no source agent answers on ${path}`, detail });
}

function denied(path: string, detail: string): FerryError {
  return new FerryError('SOURCE_AGENT_ACCESS_DENIED', { side: 'source', sourceState: 'running', message: `this user may not connect to ${path}`, detail });
}

/** Checks that PATH is a socket this user may connect to (connect(2) needs write permission on it). */
export function sourceAgentSocket(text: string): SourceAgentSocket {
  if (/^[^/]+:\d+$/.test(text)) {
    throw new FerryError('BAD_ARGUMENT', {
      message: `--via takes the source agent's socket path, not HOST:PORT (got "${text.slice(0, 64)}")`,
      hint: 'Give the path of the agent\'s --socket, e.g. --via /run/ferry/source.sock.',
    });
  }
  const path = resolve(text);
  try {
    if (!statSync(path).isSocket()) throw unreachable(path, `${path} is not a socket`);
    accessSync(path, constants.W_OK);
  } catch (e) {
    if (e instanceof FerryError) throw e;
    if (code(e) === 'EACCES' || code(e) === 'EPERM') throw denied(path, (e as Error).message);
    throw unreachable(path, (e as Error).message);
  }
  return { path, target: `unix:${path}` };
}

/**
 * A failed call that never reached the agent (the service's own errors carry their FerryError in the trailer
 * and are rebuilt before this is asked).
 */
export function connectionError(socket: SourceAgentSocket, e: unknown): FerryError {
  const details = (e as Partial<grpc.ServiceError>).details ?? (e as Error).message;
  if (/\bEACCES\b|\bEPERM\b/.test(details)) return denied(socket.path, details);
  return unreachable(socket.path, details);
}

/** A Source client on the socket. Plaintext: the socket's mode and the agent's SO_PEERCRED check stand for TLS. */
export function sourceClient<T>(socket: SourceAgentSocket): grpc.Client & T {
  const Source = ferryProto().Source;
  return new Source(socket.target, localSocketCredentials(), CHANNEL_OPTIONS) as unknown as grpc.Client & T;
}
