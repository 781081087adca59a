/**
 * Structural mutations of CRIU images, shared by the decoder fuzz and the dest fuzz: pagemap entries with
 * edge addresses, counts and flags, out of order or overlapping (re-encoded, so only the semantics are
 * wrong), and records dropped, duplicated, reordered or garbled inside intact framing.
 */
import { writeImage } from '../../shared/criu/image-file.js';
import { encodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT, type PagemapEntry } from '../../shared/criu/pagemap-image.js';
import { mutateBytes, type Mutated } from './byte-mutations.js';
import type { FuzzRandom } from './fuzz-random.js';

const EDGE_ADDRESSES = [0n, 0x1000n, 0x7fff_ffff_f000n, 2n ** 47n, 2n ** 53n, 2n ** 57n - 0x1000n, 2n ** 64n - 0x1000n, 0x1001n, 2n ** 64n - 1n];
const EDGE_COUNTS = [0, 1, 2, 0xffff, 0xffff_ffff, 2 ** 32, 2 ** 45, 2 ** 52, Number.MAX_SAFE_INTEGER];
const EDGE_FLAGS = [0, PE_PARENT, PE_LAZY, PE_PRESENT, PE_LAZY | PE_PRESENT, PE_PARENT | PE_PRESENT, PE_PARENT | PE_LAZY, 7, 8, 0x10, 0xffff_ffff];

/** Field-level mutations of a decodable pagemap, re-encoded (CRIU 4.2 layout or the legacy one). */
export function mutatePagemap(rnd: FuzzRandom, pm: { pagesId: number; entries: readonly Pick<PagemapEntry, 'vaddr' | 'nrPages' | 'flags'>[] }): Mutated {
  const entries = pm.entries.map((e) => ({ vaddr: e.vaddr, nrPages: e.nrPages, flags: e.flags }));
  const ops: string[] = [];
  for (let k = rnd.range(1, 3); k > 0 && entries.length > 0; k--) {
    const i = rnd.int(entries.length);
    const e = entries[i]!;
    switch (rnd.int(7)) {
      case 0:
        e.vaddr = rnd.pick(EDGE_ADDRESSES);
        ops.push(`vaddr[${i}]=0x${e.vaddr.toString(16)}`);
        break;
      case 1:
        e.nrPages = rnd.pick(EDGE_COUNTS);
        ops.push(`nr[${i}]=${e.nrPages}`);
        break;
      case 2:
        e.flags = rnd.pick(EDGE_FLAGS);
        ops.push(`flags[${i}]=${e.flags}`);
        break;
      case 3: {
        const j = rnd.int(entries.length);
        [entries[i], entries[j]] = [entries[j]!, entries[i]!];
        ops.push(`swap${i},${j}`);
        break;
      }
      case 4:
        entries.splice(rnd.int(entries.length + 1), 0, { ...e });
        ops.push(`dup[${i}]`);
        break;
      case 5:
        // Overlap the next entry by a page, or move the entry back over its predecessor.
        e.vaddr -= [1n, 2n, 4n].map((n) => n * 0x1000n).find((d) => d <= e.vaddr && rnd.chance(0.7)) ?? 0n;
        ops.push(`back[${i}]`);
        break;
      default:
        entries.reverse();
        ops.push('reverse');
    }
  }
  const legacy = rnd.chance(0.2) && entries.every((e) => e.nrPages <= 0xffff_ffff);
  if (legacy) ops.push('legacy');
  const pagesId = rnd.chance(0.1) ? rnd.pick([0, 0xffff_ffff]) : pm.pagesId;
  return { bytes: encodePagemap({ pagesId, entries }, { legacyNrPages: legacy }), ops };
}

/** Record-level mutations: the framing stays intact, so the message decoders see the damage. */
export function mutateRecords(rnd: FuzzRandom, magic: number, records: readonly Buffer[]): Mutated {
  const out = [...records];
  const ops: string[] = [];
  for (let k = rnd.range(1, 3); k > 0; k--) {
    const i = rnd.int(Math.max(1, out.length));
    switch (rnd.int(5)) {
      case 0:
        out.splice(i, 1);
        ops.push(`drop${i}`);
        break;
      case 1:
        if (out[i]) out.splice(rnd.int(out.length + 1), 0, out[i]);
        ops.push(`dup${i}`);
        break;
      case 2:
        rnd.shuffle(out);
        ops.push('shuffle');
        break;
      case 3:
        out.splice(i, 0, Buffer.alloc(0));
        ops.push(`empty@${i}`);
        break;
      default:
        if (out[i]) {
          const m = mutateBytes(rnd, out[i], 2);
          out[i] = m.bytes;
          ops.push(`rec${i}:${m.ops.join('+')}`);
        }
    }
  }
  return { bytes: writeImage(magic, out), ops };
}
