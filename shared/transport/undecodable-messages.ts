/**
 * A message that does not decode as ferry.v1 gets a coded answer like any other bad input. grpc-js decodes
 * below the interceptors and, when protobufjs throws, ends the call with a bare INTERNAL "Error deserializing
 * request" (no ferry-error-bin trailer; a stream could even be left without a status). So the agents' service
 * definitions decode tolerantly, turning a bad message into a marker, and an interceptor answers the marker
 * with REQUEST_INVALID before any handler sees it.
 */
import * as grpc from '@grpc/grpc-js';
import { FerryError } from '../errors/ferry-error.js';
import { toStatus } from '../errors/grpc-status.js';
import type { Side } from '../phases.js';

const UNDECODABLE = Symbol('undecodable ferry.v1 message');

interface Undecodable {
  [UNDECODABLE]: string;
}

function isUndecodable(message: unknown): message is Undecodable {
  return typeof message === 'object' && message !== null && UNDECODABLE in message;
}

/** The same service, whose request decoders never throw: a bad message becomes a marker. */
export function tolerantService(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service as Record<string, grpc.MethodDefinition<unknown, unknown>>)) {
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch (e) {
          return { [UNDECODABLE]: e instanceof Error ? e.message : String(e) } satisfies Undecodable;
        }
      },
    };
  }
  return out;
}

/** Ends a call that sent an undecodable message with REQUEST_INVALID (the handler never sees it). */
export function undecodableMessageInterceptor(side: Side): grpc.ServerInterceptor {
  return (descriptor, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMessage: (message, pass) => {
            if (!isUndecodable(message)) {
              pass(message);
              return;
            }
            const error = new FerryError('REQUEST_INVALID', {
              side,
              message: `A ${descriptor.path} message does not decode as ferry.v1`,
              detail: message[UNDECODABLE].slice(0, 200),
            });
            call.sendStatus(toStatus(error) as Parameters<typeof call.sendStatus>[0]);
          },
        });
      },
    });
}
