/** The nearest known name to a mistyped one, for "did you mean" in usage errors. */

/** Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate closest to `name`, if it is a near miss: at most a third of its letters off (at least one), so
 * that `listn` finds `listen` but `port` finds nothing rather than a guess.
 */
export function nearestName(name: string, candidates: Iterable<string>): string | undefined {
  // Names are short; anything long is not a typo worth the quadratic table.
  if (name.length > 64) return undefined;
  const budget = Math.max(1, Math.floor(name.length / 3));
  let best: { name: string; distance: number } | undefined;
  for (const c of candidates) {
    const distance = editDistance(name.toLowerCase(), c.toLowerCase());
    if (distance <= budget && (!best || distance < best.distance)) best = { name: c, distance };
  }
  return best?.name;
}
