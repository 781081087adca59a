/**
 * The one place gRPC credentials are made, for both agents and the CLI. Today every channel is plaintext
 * (loopback, or an address the operator named with --insecure-listen); mutual TLS plugs in here.
 */
import * as grpc from '@grpc/grpc-js';

export function clientCredentials(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}

export function serverCredentials(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createInsecure();
}
