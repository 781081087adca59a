/**
 * Mutated CRIU images against Ferry's decoders (shared/criu): the real CRIU 4.2.1 dumps of
 * test/fixtures/criu, mutated at the byte level (framing, varints, truncation), at the record level (records
 * dropped, duplicated, reordered, garbled inside intact framing) and at the field level (pagemap entries
 * with edge addresses, counts and flags, out of order). Every decoder must either accept the input, and then
 * what it returns keeps the invariants the dest relies on, or throw IMAGE_INVALID; never another error, never
 * a hang (each input is timed). At least 10,000 inputs; FERRY_FUZZ_* (fuzz-budget.ts) runs longer or replays.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../shared/errors/ferry-error.js';
import { decodingImage, readImageOf, readImageRecords, type CriuMagicName } from '../../shared/criu/image-file.js';
import {
  checkPagesImageSize,
  decodePagemap,
  encodePagemap,
  PE_LAZY,
  PE_PARENT,
  PE_PRESENT,
  presentPageCount,
  presentRanges,
  type Pagemap,
} from '../../shared/criu/pagemap-image.js';
import { WireReader } from '../../shared/criu/protobuf-wire.js';
import { decodeMmVmas } from '../../shared/criu/mm-image.js';
import { mutateBytes } from './byte-mutations.js';
import { mutatePagemap, mutateRecords } from './image-mutations.js';
import { fuzzBudget } from './fuzz-budget.js';
import { FuzzRandom } from './fuzz-random.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/criu/', import.meta.url));
const MIN_INPUTS = 10_000;
/** The default run: a few seconds. */
const DEFAULT_INPUTS = 40_000;
/** No decoder may take this long on one input of a few KiB: a loop that does not advance shows up here. */
const SLOW_INPUT_MS = 250;

interface Fixture {
  name: string;
  bytes: Buffer;
  magic: CriuMagicName;
  /** pages-<id>.img sizes of its dump, for checkPagesImageSize. */
  pagesSizes: Record<string, number>;
}

function magicOf(name: string): CriuMagicName {
  if (name === 'inventory.img') return 'INVENTORY';
  if (name === 'pstree.img') return 'PSTREE';
  if (name.startsWith('pagemap-')) return 'PAGEMAP';
  if (name.startsWith('mm-')) return 'MM';
  if (name.startsWith('core-')) return 'CORE';
  if (name.startsWith('stats-')) return 'STATS';
  throw new Error(`no magic known for fixture ${name}`);
}

function loadFixtures(): Fixture[] {
  const out: Fixture[] = [];
  for (const dump of readdirSync(FIXTURES, { withFileTypes: true }).filter((d) => d.isDirectory())) {
    const dir = `${FIXTURES}${dump.name}/`;
    // A fixture of a few images only (lazy/: a pagemap and an mm image) has no manifest of the dump's sizes.
    const manifest = existsSync(`${dir}manifest.json`) ? (JSON.parse(readFileSync(`${dir}manifest.json`, 'utf8')) as { files: Record<string, number> }) : { files: {} };
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.img') || n.startsWith('stats-'))) {
      out.push({ name: `${dump.name}/${name}`, bytes: readFileSync(`${dir}${name}`), magic: magicOf(name), pagesSizes: manifest.files });
    }
  }
  return out;
}

/** A schemaless walk of one record's fields, as a decoder of an unknown message would do. */
function walkFields(record: Uint8Array): number {
  const r = new WireReader(record);
  let fields = 0;
  while (!r.done) {
    r.skip(r.tag().wireType);
    fields++;
  }
  return fields;
}

/** The invariants of an accepted pagemap: what the final delta and the parent chain rely on. */
function checkPagemapInvariants(pm: Pagemap, where: string): void {
  let end = 0n;
  for (const e of pm.entries) {
    expect(e.vaddr >= end, `${where}: 0x${e.vaddr.toString(16)} overlaps or goes back`).toBe(true);
    expect(e.vaddr % 4096n, where).toBe(0n);
    expect(e.nrPages, where).toBeGreaterThan(0);
    expect(e.firstPage, where).toBe(Number(e.vaddr / 4096n));
    expect([PE_PRESENT, PE_LAZY, PE_LAZY | PE_PRESENT, PE_PARENT], where).toContain(e.flags);
    end = e.vaddr + BigInt(e.nrPages) * 4096n;
    expect(end <= 2n ** 64n, where).toBe(true);
  }
  const count = presentPageCount(pm);
  expect(Number.isSafeInteger(count), where).toBe(true);
  let offset = 0;
  for (const r of presentRanges(pm)) {
    expect(r.offset, where).toBe(offset);
    offset += r.nrPages * 4096;
  }
  expect(offset, where).toBe(count * 4096);
  // What the dest writes back must decode to the same thing.
  expect(decodePagemap(encodePagemap(pm)), where).toEqual(pm);
}

type Outcome = 'accepted' | 'IMAGE_INVALID';

const budget = fuzzBudget({ iterations: DEFAULT_INPUTS, capSeconds: 60 });

describe('CRIU image decoders under mutated real images', () => {
  it(`accept or refuse with IMAGE_INVALID, never throw otherwise nor hang (>= ${MIN_INPUTS} inputs)`, { timeout: budget.timeMs + 30_000 }, () => {
    console.log(budget.describe('image decoders fuzz'));
    const fixtures = loadFixtures();
    expect(fixtures.length).toBeGreaterThan(20);
    const pagemaps = fixtures.filter((f) => f.magic === 'PAGEMAP');
    const tally = new Map<string, number>();
    const count = (k: string): void => void tally.set(k, (tally.get(k) ?? 0) + 1);
    const unexpected: string[] = [];
    let slowest = { ms: 0, input: '' };
    const started = performance.now();
    let inputs = 0;

    /** Runs one decoder on one input; anything but IMAGE_INVALID is recorded with the input's replay line. */
    const attempt = <T>(decoder: string, input: string, fn: () => T): T | undefined => {
      try {
        const v = fn();
        count(`${decoder} ${'accepted' satisfies Outcome}`);
        return v;
      } catch (e) {
        if (isFerryError(e, 'IMAGE_INVALID')) {
          count(`${decoder} ${'IMAGE_INVALID' satisfies Outcome}`);
          expect(e.code).toBe('FERRY-5002');
          return undefined;
        }
        if (unexpected.length < 10) unexpected.push(`${decoder} on ${input}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        return undefined;
      }
    };

    for (; inputs < budget.iterations && performance.now() - started < budget.timeMs; inputs++) {
      const rnd = FuzzRandom.stream(budget.seed, inputs);
      // Half the inputs start from a pagemap: the one image the dest decodes in depth.
      const fx = rnd.pick(rnd.chance(0.5) ? pagemaps : fixtures);
      let bytes: Buffer;
      let ops: string[];
      const strategy = rnd.weighted([
        [5, 'bytes'],
        [3, 'records'],
        [2, 'pagemap'],
      ] as const);
      if (strategy === 'pagemap' && fx.magic === 'PAGEMAP') {
        ({ bytes, ops } = mutatePagemap(rnd, decodePagemap(fx.bytes, fx.name)));
        if (rnd.chance(0.2)) {
          const m = mutateBytes(rnd, bytes, 2);
          bytes = m.bytes;
          ops.push(...m.ops);
        }
      } else if (strategy !== 'bytes') {
        const { magic, records } = readImageRecords(fx.bytes, fx.name);
        ({ bytes, ops } = mutateRecords(rnd, magic, records));
      } else {
        ({ bytes, ops } = mutateBytes(rnd, fx.bytes));
      }
      const input = `input ${inputs} (${fx.name}, ${strategy}: ${ops.join(' ')}; FERRY_FUZZ_SEED=${budget.seed})`;
      const name = fx.name.split('/')[1]!;
      const t0 = performance.now();

      const framed = attempt('readImageRecords', input, () => readImageRecords(bytes, name));
      attempt('readImageOf', input, () => readImageOf(bytes, fx.magic, name));
      if (framed) {
        for (const record of framed.records) attempt('wire walk', input, () => decodingImage(name, () => walkFields(record)));
      }
      if (fx.magic === 'MM') {
        const vmas = attempt('decodeMmVmas', input, () => decodeMmVmas(bytes, name));
        if (vmas) for (const v of vmas) if (!(v.start < v.end)) unexpected.push(`${input}: a VMA [${v.start}, ${v.end}) accepted`);
        count('mm inputs');
      }
      const pm = attempt('decodePagemap', input, () => decodePagemap(bytes, name));
      if (pm) {
        checkPagemapInvariants(pm, input);
        const size = fx.pagesSizes[`pages-${pm.pagesId}.img`] ?? 0;
        attempt('checkPagesImageSize', input, () => checkPagesImageSize(pm, size));
      }

      const ms = performance.now() - t0;
      if (ms > slowest.ms) slowest = { ms, input };
      if (fx.magic === 'PAGEMAP') count(`pagemap inputs`);
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `image decoders fuzz: ${inputs} inputs in ${seconds.toFixed(1)} s, slowest ${slowest.ms.toFixed(1)} ms\n` +
        [...tally].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `  ${k}: ${n}`).join('\n'),
    );

    expect(unexpected, 'decoders threw something other than IMAGE_INVALID').toEqual([]);
    expect(slowest.ms, `slowest input: ${slowest.input}`).toBeLessThan(SLOW_INPUT_MS);
    if (!budget.timed) expect(inputs, `the time cap of ${budget.timeMs / 1000} s ended the run early`).toBeGreaterThanOrEqual(Math.min(budget.iterations, MIN_INPUTS));
    // The decoders were really exercised: some mutated pagemaps pass, many are refused.
    expect(tally.get('decodePagemap accepted') ?? 0).toBeGreaterThan(0);
    expect(tally.get('decodePagemap IMAGE_INVALID') ?? 0).toBeGreaterThan(inputs / 2);
    expect(tally.get('decodeMmVmas accepted') ?? 0).toBeGreaterThan(0);
    expect(tally.get('decodeMmVmas IMAGE_INVALID') ?? 0).toBeGreaterThan(0);
  });
});
