/** What a migration's page stream is opened with, whichever transport carries it (gRPC StreamPages or page channels). */
import type { Phase } from '../shared/phases.js';
import type { PageCompression } from './pages/page-compression.js';
import type { TokenBucket } from './token-bucket.js';

export interface PageStreamOptions {
  migrationId: string;
  epoch: string;
  windowBytes: number;
  signal: AbortSignal;
  /** The migration's phase now (owned by the orchestrator): errors name it, and only pre-copy is capped. */
  phase: () => Phase;
  /** Caps pre-copy traffic only: the final delta, sent while the task is frozen, goes at full speed. */
  bandwidth?: TokenBucket | undefined;
  /** Encodes each batch's payload (--compress) and measures the link; absent: every batch goes as it is. */
  compression?: PageCompression | undefined;
  /** Prepare's page-channel offer: the pages go over these channels instead of StreamPages. */
  channels?: { port: number; token: Buffer; count: number } | undefined;
}
