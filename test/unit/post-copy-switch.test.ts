import { describe, expect, it } from 'vitest';
import type { RoundRecord } from '../../shared/policy/convergence.js';
import { switchBeforeRead } from '../../shared/policy/post-copy-switch.js';

const PAGE = 4096;
const MIB = 256; // pages per MiB
const o = { pageSize: PAGE, maxDowntimeMs: 300 };
/** Round 0 of a 256 MiB task over ~119 MiB/s (1 Gbit/s). */
const round0: RoundRecord = { round: 0, dirtyPages: 256 * MIB, bytesSent: 256 * MIB * PAGE, durationMs: 2150, transferMs: 2150 };

describe('the early post-copy switch', () => {
  it('switches when the scan found more than half of the last round dirty and it does not fit the budget', () => {
    const s = switchBeforeRead([round0], 171 * MIB, o);
    expect(s?.rule).toBe('postcopy-early');
    expect(s?.reason).toMatch(/before round 1: its dirty set \(171\.0 MiB\) is 67 % of what round 0 sent/);
  });

  it('goes on with pre-copy when the dirty set is half or less of the last round', () => {
    expect(switchBeforeRead([round0], 128 * MIB, o)).toBeUndefined();
    expect(switchBeforeRead([round0], 17 * MIB, o)).toBeUndefined();
  });

  it('goes on when the dirty set fits the freeze budget however it compares (a small task)', () => {
    const small: RoundRecord = { round: 0, dirtyPages: 1000, bytesSent: 1000 * PAGE, durationMs: 40, transferMs: 40 };
    expect(switchBeforeRead([small], 900, o)).toBeUndefined();
  });

  it('never before round 0 has been sent', () => {
    expect(switchBeforeRead([], 10 * MIB, o)).toBeUndefined();
  });
});
