/** Loads proto/ferry/v1/ferry.proto once; both agents and the CLI share the generated service definitions. */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { repoRoot } from '../repo-root.js';

export const PROTOCOL_VERSIONS_SUPPORTED: readonly number[] = [1];

/** Explicit on both sides: page batches are <= ~1.2 MiB, manifests of very large tasks need more. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  // The receive window of the side that uses this option (grpc-js exposes no server-side window setting).
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  // grpc-js backs off up to 120 s between connection attempts: a link back after a long cut would sit idle that
  // long (a post-copy fill waits on it, with the copy faulting). A refused attempt costs one SYN: retry often.
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 1_000,
};

export const SERVER_OPTIONS: grpc.ChannelOptions = {
  // A connection with no call for 5 minutes is closed: a refused or silent peer does not keep it.
  'grpc.max_connection_idle_ms': 300_000,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
};

interface FerryPackage {
  ferry: { v1: { Dest: grpc.ServiceClientConstructor; Source: grpc.ServiceClientConstructor } };
}

let loaded: FerryPackage | undefined;

export function ferryProto(): FerryPackage['ferry']['v1'] {
  if (!loaded) {
    const def = protoLoader.loadSync(join(repoRoot(), 'proto/ferry/v1/ferry.proto'), {
      keepCase: false,
      longs: String, // uint64 as decimal strings: never a lossy JS number
      enums: String,
      defaults: true,
      oneofs: true,
    });
    loaded = grpc.loadPackageDefinition(def) as unknown as FerryPackage;
  }
  return loaded.ferry.v1;
}
