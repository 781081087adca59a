/**
 * Whether a Node version is within package.json's `engines.node` range: the comparators npm writes there
 * (>=20, >=20.10.0 <23, ^20.11.0, ~22.1, 20.x, *, and alternatives joined by ||). Ferry ships no semver
 * package for one check; a range beyond this syntax is reported as unreadable, never as satisfied.
 */

type Triple = [number, number, number];

function cmp(a: Triple, b: Triple): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/** 'v20.19.0' or '20.19.0' (a pre-release tag is ignored). */
export function parseNodeVersion(v: string): Triple | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** One comparator as [lowest allowed (inclusive), first not allowed]. */
function bounds(comparator: string): [Triple, Triple | undefined] | undefined {
  const m = /^(>=|<=|>|<|=|\^|~)?v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?$/.exec(comparator);
  if (!m) return undefined;
  const op = m[1] ?? '=';
  const parts = [m[2], m[3], m[4]].map((p) => (p === undefined || /^[xX*]$/.test(p) ? undefined : Number(p)));
  const given = parts.findIndex((p) => p === undefined);
  const known = given === -1 ? 3 : given; // how many leading numbers were given
  const v: Triple = [parts[0] ?? 0, known >= 2 ? parts[1]! : 0, known >= 3 ? parts[2]! : 0];
  // The next version past what was given: 20 -> 21.0.0, 20.1 -> 20.2.0, 20.1.2 -> 20.1.3.
  const past = (n: number): Triple => (n <= 1 ? [v[0] + 1, 0, 0] : n === 2 ? [v[0], v[1] + 1, 0] : [v[0], v[1], v[2] + 1]);
  const zero: Triple = [0, 0, 0];
  if (known === 0) return [zero, undefined];
  switch (op) {
    case '>=':
      return [v, undefined];
    case '>':
      return [past(known), undefined];
    case '<':
      return [zero, v];
    case '<=':
      return [zero, past(known)];
    case '^':
      return [v, v[0] > 0 || known === 1 ? past(1) : v[1] > 0 || known === 2 ? past(2) : past(3)];
    case '~':
      return [v, known === 1 ? past(1) : past(2)];
    default:
      return [v, past(known)];
  }
}

/** true or false; undefined when the range (or the version) is not one this reads. */
export function satisfiesEngines(version: string, range: string): boolean | undefined {
  const v = parseNodeVersion(version);
  if (!v) return undefined;
  let any = false;
  for (const alternative of range.split('||')) {
    // npm allows ">= 20" as well as ">=20".
    const comparators = alternative.trim().replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1').split(/\s+/).filter(Boolean);
    if (comparators.length === 0) comparators.push('*');
    let all = true;
    for (const c of comparators) {
      const b = bounds(c);
      if (!b) return undefined;
      if (cmp(v, b[0]) < 0 || (b[1] !== undefined && cmp(v, b[1]) >= 0)) all = false;
    }
    any ||= all;
  }
  return any;
}
