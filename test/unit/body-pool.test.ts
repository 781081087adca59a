/** The page channel's frame bodies: reused, bounded by bytes, never a buffer the pool did not make. */
import { describe, expect, it } from 'vitest';
import { BodyPool } from '../../shared/transport/page-channel/body-pool.js';

const MIB = 1024 * 1024;

describe('BodyPool', () => {
  it('hands a given-back body out again for a frame that fits', () => {
    const pool = new BodyPool(4 * MIB);
    const a = pool.take(MIB + 100);
    pool.give(a);
    const b = pool.take(MIB);
    expect(b.buffer).toBe(a.buffer);
    expect(b.length).toBe(MIB);
    expect(pool.keptBytes).toBe(0);
  });

  it('keeps at most keepBytes: a channel with frames queued to its bound takes every body from the pool', () => {
    const pool = new BodyPool(10 * MIB + 64 * 1024 * 10);
    const queued = Array.from({ length: 10 }, () => pool.take(MIB + 7000));
    for (const b of queued) pool.give(b);
    expect(pool.keptBytes).toBe(10 * (MIB + 64 * 1024));
    const again = Array.from({ length: 10 }, () => pool.take(MIB + 7000));
    expect(new Set(again.map((b) => b.buffer))).toEqual(new Set(queued.map((b) => b.buffer)));
    const small = new BodyPool(2 * MIB);
    for (const b of Array.from({ length: 3 }, () => small.take(MIB - 100))) small.give(b);
    expect(small.keptBytes).toBe(2 * MIB);
  });

  it('ignores a buffer it did not make and a body given back twice', () => {
    const pool = new BodyPool(8 * MIB);
    pool.give(Buffer.alloc(MIB));
    expect(pool.keptBytes).toBe(0);
    const a = pool.take(1000);
    pool.give(a);
    pool.give(a);
    expect(pool.keptBytes).toBe(64 * 1024);
  });
});
