/**
 * CRIU image framing (images v1.1): a u32 LE header magic, a u32 LE per-image magic, then records of
 * `u32 LE length + protobuf message`. Exceptions: `inventory.img` carries only its own magic, and the
 * service files (`stats-dump`, `stats-restore`, irmap cache) start with IMG_SERVICE_MAGIC instead of
 * IMG_COMMON_MAGIC. `pages-N.img` is raw page data with no header at all and is not read here.
 *
 * Some images append raw payloads after a record (pipes-data, ghost-file, tcp-stream, fifo-data): they
 * are not plain record streams and must not be parsed with `readImageRecords`.
 */
import { FerryError } from '../errors/ferry-error.js';
import { WireError } from './protobuf-wire.js';

export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;

/**
 * Per-image magics. Every value marked "seen" was read from a real CRIU 4.2.1 dump on this project's
 * test host; the others are from CRIU's `criu/include/magic.h` and have not shown up in our dumps yet.
 */
export const CRIU_MAGIC = {
  INVENTORY: 0x58313116, // seen: inventory.img (no common magic)
  PSTREE: 0x50273030, // seen: pstree.img
  CORE: 0x55053847, // seen: core-TID.img
  MM: 0x57492820, // seen: mm-PID.img
  IDS: 0x54432030, // seen: ids-PID.img
  FS: 0x51403912, // seen: fs-PID.img
  FDINFO: 0x56213732, // seen: fdinfo-ID.img
  FILES: 0x56303138, // seen: files.img
  PAGEMAP: 0x56084025, // seen: pagemap-PID.img (also pagemap-shmem-ID.img)
  SECCOMP: 0x64413049, // seen: seccomp.img
  TIMENS: 0x43114433, // seen: timens-0.img
  PIPES_DATA: 0x56453709, // seen: pipes-data.img (record + raw payload)
  GHOST_FILE: 0x52583605, // seen: ghost-file-ID.img (record + raw payload)
  REMAP_FPATH: 0x59133954, // seen: remap-fpath.img
  STATS: 0x57093306, // seen: stats-dump, stats-restore (service magic)
  IRMAP_CACHE: 0x57004059, // service magic
  TCP_STREAM: 0x51465506,
  TTY_INFO: 0x59453036,
  TTY_FILES: 0x59433025,
  TTY_DATA: 0x59413026,
  FILE_LOCKS: 0x54323616,
  UNIXSK: 0x54373943,
  INETSK: 0x56443851,
  PIPES: 0x56513555,
  REG_FILES: 0x50363636,
  CREDS: 0x54023547,
  UTSNS: 0x54473203,
  NETNS: 0x55933752,
  NETDEV: 0x57373951,
  MNTS: 0x55563928,
  CGROUP: 0x59383330,
} as const;
export type CriuMagicName = keyof typeof CRIU_MAGIC;

const nameByMagic = new Map<number, CriuMagicName>(
  Object.entries(CRIU_MAGIC).map(([name, magic]) => [magic, name as CriuMagicName]),
);

/** The name of an image magic, or its hex value when unknown. */
export function magicName(magic: number): string {
  return nameByMagic.get(magic) ?? `0x${magic.toString(16).padStart(8, '0')}`;
}

/** Which header an image has: only the inventory goes without one, service files use the service magic. */
function headerMagicFor(magic: number): number | undefined {
  if (magic === CRIU_MAGIC.INVENTORY) return undefined;
  if (magic === CRIU_MAGIC.STATS || magic === CRIU_MAGIC.IRMAP_CACHE) return IMG_SERVICE_MAGIC;
  return IMG_COMMON_MAGIC;
}

export interface ImageRecords {
  /** The per-image magic (for inventory.img, INVENTORY). */
  magic: number;
  /** Each record's message bytes, as views into the input buffer. */
  records: Buffer[];
}

/** An IMAGE_INVALID error naming the image. */
export function imageError(image: string, what: string, cause?: unknown): FerryError {
  return new FerryError('IMAGE_INVALID', { message: `CRIU image ${image} is invalid`, detail: `${image}: ${what}`, cause });
}

/** Runs a decoder, turning a wire-format error into IMAGE_INVALID for `image`. */
export function decodingImage<T>(image: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof WireError) throw imageError(image, e.message, e);
    throw e;
  }
}

/**
 * Splits an image into its magic and records. Strict: a short header, a truncated length prefix or a
 * record that runs past the end is an IMAGE_INVALID error naming the offset. `image` names the file in
 * errors.
 */
export function readImageRecords(buf: Buffer, image = 'image'): ImageRecords {
  const { magic, records } = iterateImageRecords(buf, image);
  return { magic, records: [...records] };
}

/**
 * The header is checked at once, the records are split as they are consumed: a decoder stops at the first
 * bad one, and a peer's image of millions of empty records never becomes millions of views before that.
 */
export function iterateImageRecords(buf: Buffer, image = 'image'): { magic: number; records: Generator<Buffer> } {
  if (buf.length < 4) throw imageError(image, `${buf.length} bytes: too short for an image header`);
  const first = buf.readUInt32LE(0);
  let magic: number;
  let start: number;
  if (first === IMG_COMMON_MAGIC || first === IMG_SERVICE_MAGIC) {
    if (buf.length < 8) throw imageError(image, 'header ends after the first magic');
    magic = buf.readUInt32LE(4);
    if (headerMagicFor(magic) !== first && nameByMagic.has(magic)) {
      throw imageError(image, `${magicName(magic)} image behind the wrong header magic 0x${first.toString(16)}`);
    }
    start = 8;
  } else if (first === CRIU_MAGIC.INVENTORY) {
    magic = first;
    start = 4;
  } else {
    throw imageError(image, `unknown header magic 0x${first.toString(16).padStart(8, '0')}`);
  }
  return { magic, records: splitRecords(buf, start, image) };
}

function* splitRecords(buf: Buffer, start: number, image: string): Generator<Buffer> {
  let n = 0;
  for (let pos = start; pos < buf.length; n++) {
    if (buf.length - pos < 4) {
      throw imageError(image, `truncated record length at offset ${pos} (record ${n}): ${buf.length - pos} of 4 bytes`);
    }
    const len = buf.readUInt32LE(pos);
    const left = buf.length - pos - 4;
    if (len > left) {
      throw imageError(image, `truncated record ${n} at offset ${pos}: length ${len}, only ${left} bytes left`);
    }
    yield buf.subarray(pos + 4, pos + 4 + len);
    pos += 4 + len;
  }
}

/** Reads an image and checks that it has the expected magic. */
export function readImageOf(buf: Buffer, expected: CriuMagicName, image: string = expected.toLowerCase()): Buffer[] {
  return [...iterateImageOf(buf, expected, image)];
}

/** Same as `readImageOf`, the records split as they are consumed. */
export function iterateImageOf(buf: Buffer, expected: CriuMagicName, image: string = expected.toLowerCase()): Generator<Buffer> {
  const { magic, records } = iterateImageRecords(buf, image);
  if (magic !== CRIU_MAGIC[expected]) throw imageError(image, `magic ${magicName(magic)} where ${expected} was expected`);
  return records;
}

/** Frames records into an image with the header that CRIU uses for this magic. */
export function writeImage(magic: number, records: readonly Uint8Array[]): Buffer {
  if (!Number.isInteger(magic) || magic < 0 || magic > 0xffff_ffff) throw new RangeError(`invalid image magic ${magic}`);
  const header = headerMagicFor(magic);
  const headLen = header === undefined ? 4 : 8;
  const total = records.reduce((n, r) => n + 4 + r.length, headLen);
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  if (header !== undefined) pos = out.writeUInt32LE(header, pos);
  pos = out.writeUInt32LE(magic, pos);
  for (const r of records) {
    pos = out.writeUInt32LE(r.length, pos);
    out.set(r, pos);
    pos += r.length;
  }
  return out;
}
