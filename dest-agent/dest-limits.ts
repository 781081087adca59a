/**
 * What one dest agent gives its peers at most: sessions and streams (in all and per peer), how long a session
 * or a stream may stay idle, how far a session may exceed what its Prepare announced. Compiled once from the
 * options; tests pass small ones.
 */

export interface DestLimits {
  /** Open (uncommitted) sessions of the agent, and of one peer. */
  maxSessions: number;
  maxSessionsPerPeer: number;
  /** A session still receiving (no Restore yet) that hears nothing this long is aborted. */
  sessionIdleMs: number;
  /** Open StreamPages and UploadImages calls of the agent, and of one peer. */
  maxStreams: number;
  maxStreamsPerPeer: number;
  /** A stream that brings no message this long (or leaves an ack unread) is ended. */
  streamIdleMs: number;
  /** Store levels of one task (a new level per new page below the last: about one per round). */
  maxStoreLevels: number;
  /** Level files open at once in the whole agent; the others are reopened when written again. */
  maxOpenLevelFiles: number;
  /**
   * A session may hold expected_bytes plus this share of it plus slackBytes, counting page slots, page bytes
   * on disk and image bytes: a task grows a little during a migration, and the images come on top.
   */
  growthShare: number;
  slackBytes: number;
}

export const DEFAULT_DEST_LIMITS: DestLimits = {
  maxSessions: 64,
  maxSessionsPerPeer: 16,
  // Longer than a slow dump (the session hears nothing while the source freezes and dumps).
  sessionIdleMs: 10 * 60_000,
  maxStreams: 128,
  maxStreamsPerPeer: 32,
  streamIdleMs: 5 * 60_000,
  // --max-rounds allows 100 rounds, and the final delta comes after them.
  maxStoreLevels: 128,
  maxOpenLevelFiles: 128,
  growthShare: 0.25,
  slackBytes: 64 * 1024 * 1024,
};

export function compileDestLimits(over: Partial<DestLimits> = {}): DestLimits {
  return { ...DEFAULT_DEST_LIMITS, ...over };
}

/** The bytes a session may hold, for what its Prepare announced. */
export function sessionQuotaBytes(limits: DestLimits, expectedBytes: bigint): bigint {
  return expectedBytes + (expectedBytes * BigInt(Math.round(limits.growthShare * 1000))) / 1000n + BigInt(limits.slackBytes);
}
