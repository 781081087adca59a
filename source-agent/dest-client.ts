/**
 * The source's typed client for the Dest service: deadlines on every unary call, an AbortSignal on all. The
 * channel is mutual TLS unless the security says plaintext; the dest must present a certificate valid for the
 * address dialed and naming an identity on this host's allow-list (shared/transport/credentials.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { injectFault, type FaultPoint } from '../shared/fault-injection.js';
import { fromServiceError } from '../shared/errors/grpc-status.js';
import type { Phase } from '../shared/phases.js';
import { parseHostPort, type HostPort } from '../shared/transport/address.js';
import type * as m from '../shared/transport/messages.js';
import type { FillCall, FillCallHandlers } from './fill-call.js';
import { clientCredentials } from '../shared/transport/credentials.js';
import { diagnoseHandshake } from '../shared/transport/handshake-diagnosis.js';
import { CHANNEL_OPTIONS, ferryProto } from '../shared/transport/proto.js';
import { defaultClientSecurity, type TransportSecurity } from '../shared/transport/transport-security.js';

type UnaryMethod = 'Negotiate' | 'Prepare' | 'Restore' | 'Commit' | 'Abort';

/**
 * The numbered fault points around the calls (shared/fault-injection.ts): before the request leaves, and once
 * its answer arrived and before anyone acts on it.
 */
const FAULT_POINTS_OF: Partial<Record<UnaryMethod, { before: FaultPoint; after?: FaultPoint }>> = {
  Prepare: { before: 'source.before-prepare', after: 'source.after-prepare' },
  Restore: { before: 'source.before-restore', after: 'source.after-restore' },
  Commit: { before: 'source.before-commit', after: 'source.after-commit' },
  Abort: { before: 'source.before-abort' },
};

type RawClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/**
 * A connection attempt still CONNECTING after this long is dropped for a new channel: grpc-js has no TCP connect
 * timeout, and a SYN sent while the link was down is retried by the kernel at 1, 2, 4, ... 64 s: after a long cut
 * the link would be back well before the attempt notices.
 */
const CONNECT_ATTEMPT_MS = 3_000;

export class DestClient {
  private client: RawClient;
  /** Since when the channel has been CONNECTING, as whenConnected saw it. */
  private connectingSince: number | undefined;

  private readonly target: HostPort;

  /** `security` defaults to TLS from the default files (FERRY_TLS_DIR, else /etc/ferry/tls). */
  constructor(
    readonly address: string,
    readonly security: TransportSecurity = defaultClientSecurity(),
  ) {
    this.target = parseHostPort(address, 'dest address');
    this.client = this.newClient();
  }

  get raw(): RawClient {
    return this.client;
  }

  /** A channel of its own (a local subchannel pool): renewing it starts a fresh TCP connection. */
  private newClient(): RawClient {
    const transport = clientCredentials(this.security, this.target);
    const Dest = ferryProto().Dest;
    return new Dest(this.address, transport.credentials, { ...CHANNEL_OPTIONS, ...transport.options, 'grpc.use_local_subchannel_pool': 1 }) as RawClient;
  }

  /**
   * Waits until the channel is connected; DEST_UNREACHABLE if it is not within the budget. The first failed
   * attempt is explained by one handshake of our own (handshake-diagnosis.ts): a refused certificate or a
   * plaintext/TLS mismatch is reported at once with its code instead of retried until the deadline.
   */
  async connect(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const deadline = Date.now() + timeoutMs;
    const channel = this.raw.getChannel();
    const cancelled = (): FerryError => new FerryError('CANCELLED', { phase: 'negotiate', side: 'source', sourceState: 'running' });
    const onAbort = (): void => this.close(); // the channel shuts down: the wait below ends at once
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let diagnosed = false;
      let lastError = 'no connection within the budget';
      for (let state = channel.getConnectivityState(true); state !== grpc.connectivityState.READY; state = channel.getConnectivityState(true)) {
        if (signal?.aborted) throw cancelled();
        if (state === grpc.connectivityState.TRANSIENT_FAILURE && !diagnosed) {
          diagnosed = true;
          const why = await diagnoseHandshake(this.target, this.security, Math.max(1, Math.min(3_000, deadline - Date.now()))).catch(() => undefined);
          if (signal?.aborted) throw cancelled();
          if (why) {
            why.sourceState = 'running';
            throw why;
          }
          lastError = 'the connection failed (TCP: is the dest agent listening there?)';
        }
        if (state === grpc.connectivityState.SHUTDOWN || Date.now() >= deadline) {
          throw new FerryError('DEST_UNREACHABLE', { phase: 'negotiate', side: 'source', sourceState: 'running', detail: `${this.address}: ${lastError}` });
        }
        const from = state;
        await new Promise<void>((resolve) => channel.watchConnectivityState(from, deadline, () => resolve()));
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Whether the channel is (or gets) connected within `timeoutMs`; never throws. It tries to connect (from IDLE at
   * once; from a failure after a backoff of 1 s at most), and an attempt stuck CONNECTING past CONNECT_ATTEMPT_MS
   * (its SYN lost while the link was down) is given up for a new channel. Called with no call in flight (the fill
   * and the commit ask before they open one): the old channel has nothing to lose.
   */
  async whenConnected(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let channel = this.client.getChannel();
    for (let state = channel.getConnectivityState(true); state !== grpc.connectivityState.READY; state = channel.getConnectivityState(true)) {
      if (state === grpc.connectivityState.SHUTDOWN || Date.now() >= deadline) return false;
      // Kept across calls: the callers ask in short waits (2 s), and a stuck attempt outlives each of them.
      if (state !== grpc.connectivityState.CONNECTING) this.connectingSince = undefined;
      else if ((this.connectingSince ??= Date.now()) + CONNECT_ATTEMPT_MS <= Date.now()) {
        this.renew();
        channel = this.client.getChannel();
        continue;
      }
      const from = state;
      const until = Math.min(deadline, this.connectingSince === undefined ? deadline : this.connectingSince + CONNECT_ATTEMPT_MS);
      await new Promise<void>((resolve) => channel.watchConnectivityState(from, until, () => resolve()));
    }
    this.connectingSince = undefined;
    return true;
  }

  /** Replaces the channel (the old one closed): the next attempt is a new TCP connection. */
  private renew(): void {
    this.connectingSince = undefined;
    const old = this.client;
    this.client = this.newClient();
    old.close();
  }

  async unary<Req, Res>(method: UnaryMethod, req: Req, opts: { phase: Phase; timeoutMs: number; signal?: AbortSignal | undefined }): Promise<Res> {
    const points = FAULT_POINTS_OF[method];
    if (points) injectFault(points.before);
    const answer = await this.call<Req, Res>(method, req, opts);
    if (points?.after) injectFault(points.after);
    return answer;
  }

  private call<Req, Res>(method: UnaryMethod, req: Req, opts: { phase: Phase; timeoutMs: number; signal?: AbortSignal | undefined }): Promise<Res> {
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

  /**
   * The Fill stream of a lazy restore. No deadline (a fill lasts as long as the copy takes to page in); the
   * caller bounds its waits and cancels through `signal`. The call's end is reported once, from 'error' (with
   * the dest's FerryError, FILL_FAILED among them) or 'status' (clean).
   */
  fill(h: FillCallHandlers, signal: AbortSignal): FillCall {
    const call = (this.raw.Fill as () => grpc.ClientDuplexStream<m.FillRequest, m.FillEvent>)();
    let over: { error: FerryError | undefined } | undefined;
    let wakeWriter: (() => void) | undefined;
    let halfClosed = false;
    const finish = (error: FerryError | undefined): void => {
      if (over) return;
      over = { error };
      signal.removeEventListener('abort', onAbort);
      wakeWriter?.();
      h.end(error);
    };
    const onAbort = (): void => {
      finish(new FerryError('CANCELLED', { phase: 'fill', side: 'source' }));
      call.cancel();
    };
    call.on('data', (e: m.FillEvent) => {
      if (!over) h.event(e);
    });
    call.on('error', (err: grpc.ServiceError) => {
      finish(
        fromServiceError(
          err,
          new FerryError(err.code === grpc.status.CANCELLED ? 'CANCELLED' : 'DEST_UNREACHABLE', { phase: 'fill', side: 'dest', message: `Fill to ${this.address} failed: ${err.details || err.message}`, cause: err }),
        ),
      );
    });
    call.on('status', (st: grpc.StatusObject) => {
      if (st.code === grpc.status.OK) finish(undefined);
    });
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const ended = (): FerryError => over?.error ?? new FerryError('DEST_UNREACHABLE', { phase: 'fill', side: 'dest', detail: `the Fill call to ${this.address} has ended` });
    return {
      write: async (req) => {
        if (over) throw ended();
        if (call.write(req)) return;
        await new Promise<void>((resolve) => {
          wakeWriter = resolve;
          call.once('drain', resolve);
        });
        wakeWriter = undefined;
        if (over) throw ended();
      },
      // Both always reach the call: a dest that sent its status still waits for our half-close to free the stream.
      end: () => {
        if (halfClosed) return;
        halfClosed = true;
        call.end();
      },
      cancel: () => {
        finish(new FerryError('CANCELLED', { phase: 'fill', side: 'source' }));
        call.cancel();
      },
    };
  }

  close(): void {
    this.client.close();
  }
}
