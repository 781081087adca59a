/**
 * `stats-dump` and `stats-restore`: CRIU's own measurements of a run (service magic + STATS).
 * One record, a stats_entry { dump = 1, restore = 2 } (CRIU images/stats.proto; field numbers checked on
 * CRIU 4.2.1 dumps, where every field below 15 was present). Times are microseconds.
 */
import { decodingImage, imageError, readImageOf } from './image-file.js';
import { WireReader } from './protobuf-wire.js';

export interface DumpStats {
  freezingTimeUs: number; // 1
  /** The time the tree was frozen: the downtime a final dump costs. */
  frozenTimeUs: number; // 2
  memdumpTimeUs: number; // 3
  memwriteTimeUs: number; // 4
  pagesScanned: number; // 5
  pagesSkippedParent: number; // 6
  pagesWritten: number; // 7
  irmapResolveUs?: number; // 8
  pagesLazy: number; // 9
  pagePipes?: number; // 10
  pagePipeBufs?: number; // 11
  shpagesScanned?: number; // 12
  shpagesSkippedParent?: number; // 13
  shpagesWritten?: number; // 14
}

export interface RestoreStats {
  pagesCompared: number; // 1
  pagesSkippedCow: number; // 2
  forkingTimeUs: number; // 3
  restoreTimeUs: number; // 4
  pagesRestored?: number; // 5
}

export interface CriuStats {
  dump?: DumpStats;
  restore?: RestoreStats;
}

const DUMP_FIELDS = [
  'freezingTimeUs',
  'frozenTimeUs',
  'memdumpTimeUs',
  'memwriteTimeUs',
  'pagesScanned',
  'pagesSkippedParent',
  'pagesWritten',
  'irmapResolveUs',
  'pagesLazy',
  'pagePipes',
  'pagePipeBufs',
  'shpagesScanned',
  'shpagesSkippedParent',
  'shpagesWritten',
] as const satisfies readonly (keyof DumpStats)[];
const DUMP_REQUIRED: readonly (keyof DumpStats)[] = ['freezingTimeUs', 'frozenTimeUs', 'memdumpTimeUs', 'memwriteTimeUs', 'pagesScanned', 'pagesSkippedParent', 'pagesWritten'];

const RESTORE_FIELDS = ['pagesCompared', 'pagesSkippedCow', 'forkingTimeUs', 'restoreTimeUs', 'pagesRestored'] as const satisfies readonly (keyof RestoreStats)[];
const RESTORE_REQUIRED: readonly (keyof RestoreStats)[] = ['pagesCompared', 'pagesSkippedCow', 'forkingTimeUs', 'restoreTimeUs'];

/** Reads a flat message of unsigned integers; field N goes to names[N-1]. Unknown fields are skipped. */
function decodeCounters<K extends string>(buf: Uint8Array, names: readonly K[], required: readonly K[], where: string): Partial<Record<K, number>> {
  const r = new WireReader(buf);
  const out: Partial<Record<K, number>> = {};
  while (!r.done) {
    const t = r.tag();
    const name = names[t.field - 1];
    if (name === undefined) r.skip(t.wireType);
    else out[name] = r.uint64(t.wireType);
  }
  const missing = required.filter((k) => out[k] === undefined);
  if (missing.length > 0) throw imageError(where, `missing ${missing.join(', ')}`);
  return out;
}

/** Decodes stats-dump or stats-restore (either may hold either part; CRIU writes one per file). */
export function decodeStats(buf: Buffer, image = 'stats'): CriuStats {
  const records = readImageOf(buf, 'STATS', image);
  const [rec] = records;
  if (rec === undefined || records.length !== 1) throw imageError(image, `${records.length} records where 1 was expected`);
  return decodingImage(image, () => {
    const r = new WireReader(rec);
    const out: CriuStats = {};
    while (!r.done) {
      const t = r.tag();
      if (t.field === 1) out.dump = decodeCounters(r.bytes(t.wireType), DUMP_FIELDS, DUMP_REQUIRED, `${image} dump`) as DumpStats;
      else if (t.field === 2) out.restore = decodeCounters(r.bytes(t.wireType), RESTORE_FIELDS, RESTORE_REQUIRED, `${image} restore`) as RestoreStats;
      else r.skip(t.wireType);
    }
    return out;
  });
}

export function decodeDumpStats(buf: Buffer, image = 'stats-dump'): DumpStats {
  const s = decodeStats(buf, image);
  if (!s.dump) throw imageError(image, 'no dump statistics');
  return s.dump;
}

export function decodeRestoreStats(buf: Buffer, image = 'stats-restore'): RestoreStats {
  const s = decodeStats(buf, image);
  if (!s.restore) throw imageError(image, 'no restore statistics');
  return s.restore;
}
