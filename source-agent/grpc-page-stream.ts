/**
 * The migration's page stream (PageStream in migration/ports.ts) over gRPC, the source end of StreamPages:
 * batches go out while at most `windowBytes` are unacknowledged (the dest acks a batch once it is hashed and
 * stored), and write() back-pressure is honoured with 'drain'.
 */
import type * as grpc from '@grpc/grpc-js';
import { FerryError } from '../shared/errors/ferry-error.js';
import { fromServiceError } from '../shared/errors/grpc-status.js';
import type * as m from '../shared/transport/messages.js';
import { batchPageCount, PAGE_ENTRY_BYTES, type PageBatch } from '../shared/transport/page-batch.js';
import { PAGE_CODEC } from '../shared/pages/batch-codec.js';
import type { DestClient } from './dest-client.js';
import type { PageStreamOptions } from './page-stream-options.js';
import { batchPayload, StreamWaits } from './stream-waits.js';


export class GrpcPageStream {
  private readonly call: grpc.ClientDuplexStream<m.PageBatchMessage, m.PageAck>;
  private seq = 0n;
  private inflightBytes = 0;
  /** Each unacknowledged batch's window cost, oldest first (acks come in order). */
  private readonly costs: number[] = [];
  private unacked = 0;
  private readonly waits = new StreamWaits();
  private ended = false;
  private readonly closed: Promise<void>;
  /** Cumulative figures for metrics and the summary. */
  bytesSent = 0;
  pagesSent = 0;
  /** What storing cost the dest, from its acks (the cost model's store rate). */
  storedBytes = 0;
  storeMicros = 0;

  constructor(
    client: DestClient,
    private readonly opts: PageStreamOptions,
  ) {
    this.call = (client.raw.StreamPages as () => grpc.ClientDuplexStream<m.PageBatchMessage, m.PageAck>)();
    this.call.on('data', (ack: m.PageAck) => {
      const cost = this.costs.shift() ?? Number(ack.bytes) + ack.pages * PAGE_ENTRY_BYTES;
      this.inflightBytes -= cost;
      this.opts.compression?.acked(cost);
      this.storedBytes += Number(ack.rawBytes ?? 0) || Number(ack.bytes);
      this.storeMicros += Number(ack.storeUs);
      this.unacked--;
      this.waits.poke();
    });
    this.closed = new Promise<void>((resolve) => {
      this.call.on('error', (err: grpc.ServiceError) => {
        this.waits.fail(
          fromServiceError(
            err,
            new FerryError('PAGE_STREAM_FAILED', { phase: this.opts.phase(), side: 'source', detail: err.details || err.message, cause: err }),
          ),
        );
        resolve();
      });
      this.call.on('status', () => resolve());
      this.call.on('end', () => {
        if (this.unacked > 0) this.waits.fail(new FerryError('PAGE_STREAM_FAILED', { phase: this.opts.phase(), side: 'source', detail: 'the dest ended the stream early' }));
        resolve();
      });
    });
    opts.signal.addEventListener('abort', this.onAbort, { once: true });
  }

  private readonly onAbort = (): void => {
    this.waits.fail(new FerryError('CANCELLED', { phase: this.opts.phase(), side: 'source' }));
    this.call.cancel();
  };

  async send(task: number, round: number, batch: PageBatch): Promise<void> {
    const pages = batchPageCount(batch);
    if (pages === 0) return;
    this.waits.throwIfFailed();
    const { codec, payload } = batchPayload(round, batch, this.opts.compression);
    const cost = await this.waits.admit(pages, payload.length, this.opts, () => this.inflightBytes);
    this.seq++;
    this.inflightBytes += cost;
    this.costs.push(cost);
    this.opts.compression?.sent();
    this.unacked++;
    this.bytesSent += batch.data.length;
    this.pagesSent += pages;
    const ok = this.call.write({
      migrationId: this.opts.migrationId,
      epoch: this.opts.epoch,
      seq: this.seq.toString(),
      round,
      task,
      pageNumbers: batch.pageNumbers,
      hashes: batch.hashes,
      kinds: batch.kinds,
      data: payload,
      codec: PAGE_CODEC[codec],
      rawBytes: batch.data.length,
    } satisfies m.PageBatchMessage);
    if (!ok) {
      let drained = false;
      this.call.once('drain', () => {
        drained = true;
        this.waits.poke();
      });
      await this.waits.until(() => drained);
    }
  }

  /** Waits until the dest has acknowledged everything sent so far. */
  async flush(): Promise<void> {
    await this.waits.until(() => this.unacked === 0);
  }

  /** Ends the stream after every batch is acknowledged. */
  async finish(): Promise<void> {
    await this.flush();
    if (!this.ended) {
      this.ended = true;
      this.call.end();
    }
    await this.closed;
    this.opts.signal.removeEventListener('abort', this.onAbort);
    this.waits.throwIfFailed();
  }

  /** Drops the stream (rollback): nothing more is sent, pending waits fail. */
  cancel(): void {
    this.opts.signal.removeEventListener('abort', this.onAbort);
    this.waits.fail(new FerryError('CANCELLED', { phase: this.opts.phase(), side: 'source' }));
    this.call.cancel();
  }
}
