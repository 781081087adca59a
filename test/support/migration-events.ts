/** Events of one small migration for the tests of its listeners (metrics, logs): one round, one decision. */
import type { MigrationEvent, RoundSummary } from '../../source-agent/migration/events.js';

export const ROUND: RoundSummary = { round: 0, presentPages: 100, dirtyPages: 100, zeroPages: 10, bytesSent: 90 * 4096, bytesRead: 100 * 4096, durationMs: 50, transferMs: 40, throttlePercent: 0, codec: 'none', wireBytes: 90 * 4096 };

export const THROTTLE_DECISION: MigrationEvent = {
  kind: 'decision',
  action: 'throttle',
  rule: 'not-converging',
  message: 'throttling',
  expectedDowntimeMs: 400,
  dirtyRateBytesPerSecond: 5e6,
  transferRateBytesPerSecond: 1e7,
  fixedCostMs: 100,
  throttlePercent: 30,
  remainingBytes: 100 * 4096,
};
