/**
 * A Dest client that sends bytes, not objects: each message is whatever buffer the fuzzer made (a valid
 * encoding, a field-mutated one, or raw garbage), so the dest's own decoding is what gets tested. Every call
 * has a deadline and ends in one `CallOutcome`: the status, the parsed `ferry-error-bin` trailer, the
 * decoded responses. Its own connection (a local subchannel pool): a wedged connection stays this client's.
 */
import * as grpc from '@grpc/grpc-js';
import { ferryProto, CHANNEL_OPTIONS } from '../../shared/transport/proto.js';
import type { SerializedFerryError } from '../../shared/errors/ferry-error.js';

export const DEST_CALLS = ['Negotiate', 'Prepare', 'StreamPages', 'UploadImages', 'Restore', 'Commit', 'Abort'] as const;
export type DestCall = (typeof DEST_CALLS)[number];

const TRAILER = 'ferry-error-bin';

export interface CallOutcome {
  call: DestCall;
  /** The gRPC status code (0 OK). */
  code: grpc.status;
  details: string;
  /** The trailer as sent, when there is one. */
  trailer: Buffer | undefined;
  /** The trailer parsed; undefined when absent or not JSON. */
  ferry: SerializedFerryError | undefined;
  responses: unknown[];
  /** Messages the client wrote (1 for a unary call). */
  sent: number;
  elapsedMs: number;
  /** The client itself ended the call early (a stream cut short): CANCELLED is then its own doing. */
  cancelledByClient: boolean;
}

export interface StreamPlan {
  /** Cancel the call after writing this many messages (a stream ended early); undefined: half-close. */
  cancelAfter?: number | undefined;
  /** With cancelAfter: cancel once this many responses (acks) arrived, not at once. */
  cancelWhenAcked?: number | undefined;
}

type Definition = grpc.MethodDefinition<unknown, unknown>;

/** Encodes a message object for `call` the way the real client does (proto-loader's serializer). */
export function encodeRequest(call: DestCall, message: unknown): Buffer {
  return (ferryProto().Dest.service[call] as Definition).requestSerialize(message);
}

/** Decodes a request as the dest does; throws when it cannot. */
export function decodeRequest(call: DestCall, bytes: Buffer): unknown {
  return (ferryProto().Dest.service[call] as Definition).requestDeserialize(bytes);
}

function decodeResponse(call: DestCall, bytes: Buffer): unknown {
  return (ferryProto().Dest.service[call] as Definition).responseDeserialize(bytes);
}

const identity = (b: Buffer): Buffer => b;

export class RawDestClient {
  private readonly client: grpc.Client;

  constructor(
    address: string,
    private readonly deadlineMs: number,
  ) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
  }

  close(): void {
    this.client.close();
  }

  /** One call with `messages` as its request(s): one for the unary calls, any number for the streams. */
  call(call: DestCall, messages: readonly Buffer[], plan: StreamPlan = {}): Promise<CallOutcome> {
    const path = (ferryProto().Dest.service[call] as Definition).path;
    const def = ferryProto().Dest.service[call] as Definition;
    const options: grpc.CallOptions = { deadline: Date.now() + this.deadlineMs };
    const t0 = performance.now();
    const responses: unknown[] = [];
    let cancelledByClient = false;
    let sent = 0;

    return new Promise<CallOutcome>((resolve) => {
      const finish = (status: grpc.StatusObject): void => {
        const raw = status.metadata?.get(TRAILER)[0];
        const trailer = raw instanceof Buffer ? raw : undefined;
        let ferry: SerializedFerryError | undefined;
        try {
          ferry = trailer ? (JSON.parse(trailer.toString('utf8')) as SerializedFerryError) : undefined;
        } catch {
          ferry = undefined;
        }
        resolve({ call, code: status.code, details: status.details, trailer, ferry, responses, sent, elapsedMs: performance.now() - t0, cancelledByClient });
      };
      let cancel: (() => void) | undefined;
      const collect = (bytes: Buffer): void => {
        try {
          responses.push(decodeResponse(call, bytes));
        } catch {
          responses.push(undefined);
        }
        if (plan.cancelWhenAcked !== undefined && responses.length >= plan.cancelWhenAcked) cancel?.();
      };

      if (!def.requestStream) {
        sent = 1;
        const c = this.client.makeUnaryRequest(path, identity, identity, messages[0] ?? Buffer.alloc(0), new grpc.Metadata(), options, (_err, res) => {
          if (res) collect(res);
        });
        c.on('status', finish);
        return;
      }

      const stream: grpc.ClientWritableStream<Buffer> = def.responseStream
        ? this.client.makeBidiStreamRequest(path, identity, identity, new grpc.Metadata(), options)
        : this.client.makeClientStreamRequest(path, identity, identity, new grpc.Metadata(), options, (_err, res) => {
            if (res) collect(res);
          });
      stream.on('status', finish);
      stream.on('error', () => undefined); // the status event carries the outcome
      if (def.responseStream) (stream as unknown as grpc.ClientDuplexStream<Buffer, Buffer>).on('data', collect);
      const limit = plan.cancelAfter ?? messages.length;
      for (const m of messages.slice(0, limit)) {
        stream.write(m);
        sent++;
      }
      if (plan.cancelAfter !== undefined) {
        cancel = () => {
          cancelledByClient = true;
          stream.cancel();
        };
        // Let the writes leave first, so the dest sees a stream that started and then went away.
        if (plan.cancelWhenAcked === undefined) setTimeout(cancel, 2).unref();
      } else {
        stream.end();
      }
    });
  }
}
