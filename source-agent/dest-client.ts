/** The source's typed client for the Dest service: deadlines on every unary call, an AbortSignal on all. */
import * as grpc from '@grpc/grpc-js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { fromServiceError } from '../shared/errors/grpc-status.js';
import type { Phase } from '../shared/phases.js';
import type * as m from '../shared/transport/messages.js';
import { clientCredentials } from '../shared/transport/credentials.js';
import { CHANNEL_OPTIONS, ferryProto } from '../shared/transport/proto.js';

type UnaryMethod = 'Negotiate' | 'Prepare' | 'Restore' | 'Commit' | 'Abort';

export class DestClient {
  readonly raw: grpc.Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(readonly address: string) {
    const Dest = ferryProto().Dest;
    this.raw = new Dest(address, clientCredentials(), CHANNEL_OPTIONS) as DestClient['raw'];
  }

  /** Waits until the channel is connected; DEST_UNREACHABLE if it is not within the budget. */
  async connect(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.close(); // ends the wait at once; waitForReady then reports the closed channel, ignored below
        reject(new FerryError('CANCELLED', { phase: 'negotiate', side: 'source', sourceState: 'running' }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.raw.waitForReady(Date.now() + timeoutMs, (err) => {
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) return;
        if (err) reject(new FerryError('DEST_UNREACHABLE', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: `${this.address}: ${err.message}` }));
        else resolve();
      });
    });
  }

  unary<Req, Res>(method: UnaryMethod, req: Req, opts: { phase: Phase; timeoutMs: number; signal?: AbortSignal | undefined }): Promise<Res> {
    opts.signal?.throwIfAborted();
    return new Promise<Res>((resolve, reject) => {
      const call = (this.raw[method] as (r: Req, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Res>) => grpc.ClientUnaryCall)(
        req,
        new grpc.Metadata(),
        { deadline: Date.now() + opts.timeoutMs },
        (err, res) => {
          opts.signal?.removeEventListener('abort', onAbort);
          if (err) {
            reject(
              fromServiceError(
                err,
                new FerryError(err.code === grpc.status.CANCELLED ? 'CANCELLED' : 'DEST_UNREACHABLE', {
                  phase: opts.phase,
                  side: 'dest',
                  message: `${method} to ${this.address} failed: ${err.details || err.message}`,
                  cause: err,
                }),
              ),
            );
          } else resolve(res as Res);
        },
      );
      const onAbort = (): void => call.cancel();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  negotiate(req: m.NegotiateRequest, signal?: AbortSignal): Promise<m.NegotiateResponse> {
    return this.unary('Negotiate', req, { phase: 'negotiate', timeoutMs: 15_000, signal });
  }
  prepare(req: m.PrepareRequest, signal?: AbortSignal): Promise<m.PrepareResponse> {
    return this.unary('Prepare', req, { phase: 'prepare', timeoutMs: 30_000, signal });
  }
  restore(req: m.RestoreRequest, signal?: AbortSignal): Promise<m.RestoreResponse> {
    // The dest enforces the restore timeout itself; the call gets room for the rebuild on top of it.
    return this.unary('Restore', req, { phase: 'restore', timeoutMs: req.timeoutMs + 120_000, signal });
  }
  commit(req: m.CommitRequest): Promise<m.CommitResponse> {
    return this.unary('Commit', req, { phase: 'commit', timeoutMs: 15_000 });
  }
  abort(req: m.AbortRequest): Promise<m.AbortResponse> {
    return this.unary('Abort', req, { phase: 'rollback', timeoutMs: 15_000 });
  }

  close(): void {
    this.raw.close();
  }
}
