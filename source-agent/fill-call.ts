/** The Fill call of a lazy restore as the source's phases see it (DestPort.fill; grpc-js in dest-client.ts). */
import type { FerryError } from '../shared/errors/ferry-error.js';
import type * as m from '../shared/transport/messages.js';

/** One Fill call (the source end of the bidirectional stream; confirm-pages.ts drives it). */
export interface FillCall {
  /**
   * Sends one request; resolves once another may be written (at once, or after the stream's 'drain'), rejects
   * once the call has ended.
   */
  write(req: m.FillRequest): Promise<void>;
  /** Ends the source's half (after the dest's done). */
  end(): void;
  /** Drops the call; `end` of its handlers is called (with CANCELLED) if it had not ended. Idempotent. */
  cancel(): void;
}

export interface FillCallHandlers {
  /** Each of the dest's events, in order. */
  event(e: m.FillEvent): void;
  /**
   * Once, when the call is over: undefined when the dest ended it cleanly, else why (a FerryError: FILL_FAILED
   * when the dest's pager failed and its copy was killed; DEST_UNREACHABLE, CANCELLED, ... when the call broke).
   */
  end(error: FerryError | undefined): void;
}
