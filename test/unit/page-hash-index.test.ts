/**
 * The page -> (slot, hash) index's open-addressing table: growth, collisions, the fast paths (a page above the
 * highest held, the next slot of a walk) and a model check against a Map. It has no delete: a page keeps its
 * slot for the index's life (set again, it keeps it and takes the new hash).
 */
import { describe, expect, it } from 'vitest';
import { PageHashIndex, pageBucket } from '../../shared/pages/page-hash-index.js';
import { fakeHash } from '../support/fake-hash.js';


/** A deterministic PRNG (mulberry32): the model check runs the same operations every time. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** The initial table has 2048 buckets: shift 21. */
const INITIAL_SHIFT = 21;

describe('PageHashIndex table', () => {
  it('keeps every page through many growths, sequential runs and scattered pages alike', () => {
    const idx = new PageHashIndex();
    const base = 0x7f12_3456_0; // a real mmap area's page numbers: above 2^32
    const pages: number[] = [];
    for (let i = 0; i < 70_000; i++) pages.push(base + i);
    const r = rng(1);
    for (let i = 0; i < 30_000; i++) pages.push(Math.floor(r() * 2 ** 45));
    const unique = [...new Set(pages)];
    // Mismatches are collected, not asserted one by one: 100,000 expects would be most of the test's time.
    const wrong: string[] = [];
    for (const [i, p] of unique.entries()) if (idx.set(p, fakeHash(p), 0) !== i) wrong.push(`set ${p}`);
    expect(idx.size).toBe(unique.length);
    for (const [i, p] of unique.entries()) {
      if (idx.slotOf(p) !== i) wrong.push(`slotOf ${p}`);
      if (!idx.holds(p, fakeHash(p), 0)) wrong.push(`holds ${p}`);
    }
    expect(wrong).toEqual([]);
    expect(idx.slotOf(base - 1)).toBeUndefined();
    expect(idx.slotOf(base + 70_000)).toBeUndefined();
    expect([...idx.pages()]).toEqual(unique);
  });

  it('resolves pages whose buckets collide, before and after the table grows', () => {
    // Pages of one bucket in the initial table, found by search: their probe sequences overlap.
    const target = pageBucket(0x7f00_0000_0, INITIAL_SHIFT);
    const same: number[] = [];
    for (let p = 0x7f00_0000_0; same.length < 6; p++) if (pageBucket(p, INITIAL_SHIFT) === target) same.push(p);
    const idx = new PageHashIndex();
    // Set out of order (below the highest page, so the lookups go through the table), one left out.
    const held = [same[3]!, same[0]!, same[4]!, same[1]!, same[2]!];
    for (const p of held) idx.set(p, fakeHash(p), 0);
    for (const [i, p] of held.entries()) expect(idx.slotOf(p)).toBe(i);
    const absent = same[5]!;
    expect(idx.slotOf(absent)).toBeUndefined();
    expect(idx.holds(absent, fakeHash(absent), 0)).toBe(false);
    // Grow it past several doublings: the collided pages keep their slots.
    for (let i = 0; i < 10_000; i++) idx.set(2 ** 40 + i * 7, fakeHash(i), 0);
    for (const [i, p] of held.entries()) expect(idx.slotOf(p)).toBe(i);
    expect(idx.slotOf(absent)).toBeUndefined();
    // A colliding page set later joins at the end.
    expect(idx.set(absent, fakeHash(absent), 0)).toBe(held.length + 10_000);
  });

  it('a page set again keeps its slot and takes the new hash (nothing is ever removed)', () => {
    const idx = new PageHashIndex();
    for (let p = 0; p < 3000; p++) idx.set(p, fakeHash(p, 0), 0);
    expect(idx.set(1234, fakeHash(1234, 1), 0)).toBe(1234);
    expect(idx.size).toBe(3000);
    expect(idx.holds(1234, fakeHash(1234, 0), 0)).toBe(false);
    expect(idx.holds(1234, fakeHash(1234, 1), 0)).toBe(true);
    expect(idx.hashAt(1234).equals(fakeHash(1234, 1))).toBe(true);
  });

  it('page 0 and the highest page number are pages like any other', () => {
    const idx = new PageHashIndex();
    const top = 2 ** 45 - 1;
    expect(idx.slotOf(0)).toBeUndefined();
    idx.set(top, fakeHash(top), 0);
    expect(idx.slotOf(0)).toBeUndefined(); // below the highest page, not held
    idx.set(0, fakeHash(0), 0);
    expect(idx.slotOf(0)).toBe(1);
    expect(idx.slotOf(top)).toBe(0);
    expect(idx.slotOf(top - 1)).toBeUndefined();
  });

  it('the next-slot guess never answers for another page', () => {
    const idx = new PageHashIndex();
    for (const p of [10, 11, 12, 20, 21]) idx.set(p, fakeHash(p), 0);
    // Walk: 10 (slot 0), then 12 (not slot 1's page), then 11, 20, then 13 (absent, its guess is slot 3).
    expect(idx.slotOf(10)).toBe(0);
    expect(idx.slotOf(12)).toBe(2);
    expect(idx.slotOf(11)).toBe(1);
    expect(idx.slotOf(12)).toBe(2);
    expect(idx.slotOf(13)).toBeUndefined();
    expect(idx.slotOf(20)).toBe(3);
    expect(idx.slotAfter(21, 3)).toBe(4);
    expect(idx.slotAfter(11, 3)).toBe(1);
  });

  it('answers as a Map would over a random mix of sets and lookups', () => {
    const idx = new PageHashIndex();
    const model = new Map<number, { slot: number; version: number }>();
    const r = rng(42);
    // Pages clustered in a few areas (as a task's mappings are), walked partly in order.
    const areas = [0x5555_5555_0, 0x7f00_0000_0, 0x7ffc_0000_0, 12345];
    let walk = areas[0]!;
    for (let op = 0; op < 60_000; op++) {
      const x = r();
      const page = x < 0.5 ? walk++ : areas[Math.floor(r() * areas.length)]! + Math.floor(r() * 5000);
      if (x < 0.02) walk = areas[Math.floor(r() * areas.length)]!;
      if (r() < 0.6) {
        const had = model.get(page);
        const version = (had?.version ?? 0) + 1;
        const slot = idx.set(page, fakeHash(page, version), 0);
        if (had) expect(slot).toBe(had.slot);
        else expect(slot).toBe(model.size);
        model.set(page, { slot, version });
      } else {
        const m = model.get(page);
        expect(idx.slotOf(page)).toBe(m?.slot);
        if (m) expect(idx.holds(page, fakeHash(page, m.version), 0)).toBe(true);
      }
    }
    expect(idx.size).toBe(model.size);
  });
});
