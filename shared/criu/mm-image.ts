/**
 * `mm-PID.img`: a task's address space as CRIU dumped it. One mm_entry record; Ferry reads only its VMAs, which
 * the lazy restore needs to split pagemap entries at VMA edges (UFFDIO_COPY must stay inside one VMA).
 * Field numbers (CRIU 4.2 images/mm.proto and images/vma.proto, checked on CRIU 4.2.1 dumps):
 *   mm_entry:  vmas = 14 (repeated vma_entry); fields 1-13 and 15-17 are skipped
 *   vma_entry: start = 1, end = 2 (uint64), pgoff = 3, shmid = 4 (uint64), prot = 5, flags = 6 (mmap flags),
 *              status = 7 (CRIU's VMA_AREA_* / VMA_* bits, uint32), fd = 8 (sint64), madv = 9, fdflags = 10
 *
 * Strict, because the dest reads an image a peer sent: VMAs must be page aligned, non-empty, ascending and not
 * overlapping (CRIU writes them so, and the range split relies on it). Anything else is IMAGE_INVALID.
 */
import { CRIU_MAGIC, decodingImage, imageError, iterateImageOf, writeImage } from './image-file.js';
import { PAGE_SIZE } from './pagemap-image.js';
import { WireReader, WireWriter } from './protobuf-wire.js';

const PAGE_SIZE_BIG = BigInt(PAGE_SIZE);

/** mmap(2) flags as CRIU stores them (x86_64 values). */
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_LOCKED = 0x2000;
export const MAP_HUGETLB = 0x40000;

/** CRIU's VMA status bits (criu/include/image.h). */
export const VMA_AREA_REGULAR = 1 << 0;
export const VMA_AREA_STACK = 1 << 1;
export const VMA_AREA_VSYSCALL = 1 << 2;
export const VMA_AREA_VDSO = 1 << 3;
export const VMA_AREA_HEAP = 1 << 5;
export const VMA_ANON_PRIVATE = 1 << 9;
export const VMA_AREA_VVAR = 1 << 12;

/** No task has more (vm.max_map_count is 65530 by default); refused before a peer's image costs memory. */
export const MAX_VMAS = 1 << 20;

export interface MmVma {
  start: bigint;
  end: bigint;
  prot: number;
  flags: number;
  status: number;
}

/** Decodes the VMAs of an mm image. `image` names the file in errors. */
export function decodeMmVmas(buf: Buffer, image = 'mm.img'): MmVma[] {
  const records = iterateImageOf(buf, 'MM', image);
  return decodingImage(image, () => {
    const first = records.next();
    if (first.done) throw imageError(image, 'no mm_entry record');
    if (!records.next().done) throw imageError(image, 'more than one mm_entry record');
    const r = new WireReader(first.value);
    const vmas: MmVma[] = [];
    while (!r.done) {
      const t = r.tag();
      if (t.field !== 14) {
        r.skip(t.wireType);
        continue;
      }
      if (vmas.length === MAX_VMAS) throw imageError(image, `more than ${MAX_VMAS} VMAs`);
      const where = `${image} vma ${vmas.length}`;
      const vma = decodeVma(r.bytes(t.wireType), where);
      const prev = vmas.at(-1);
      if (prev && vma.start < prev.end) {
        throw imageError(where, `VMA 0x${vma.start.toString(16)} overlaps or precedes the one before it, which ends at 0x${prev.end.toString(16)}`);
      }
      vmas.push(vma);
    }
    return vmas;
  });
}

function decodeVma(buf: Uint8Array, where: string): MmVma {
  const r = new WireReader(buf);
  let start: bigint | undefined;
  let end: bigint | undefined;
  let prot = 0;
  let flags = 0;
  let status = 0;
  while (!r.done) {
    const t = r.tag();
    switch (t.field) {
      case 1:
        start = r.uint64Big(t.wireType);
        break;
      case 2:
        end = r.uint64Big(t.wireType);
        break;
      case 5:
        prot = r.uint32(t.wireType);
        break;
      case 6:
        flags = r.uint32(t.wireType);
        break;
      case 7:
        status = r.uint32(t.wireType);
        break;
      default:
        r.skip(t.wireType);
    }
  }
  if (start === undefined || end === undefined) throw imageError(where, 'VMA without start or end');
  if (start % PAGE_SIZE_BIG !== 0n || end % PAGE_SIZE_BIG !== 0n) {
    throw imageError(where, `VMA 0x${start.toString(16)}-0x${end.toString(16)} is not page aligned`);
  }
  if (end <= start) throw imageError(where, `VMA 0x${start.toString(16)}-0x${end.toString(16)} is empty`);
  return { start, end, prot, flags, status };
}

/**
 * Whether CRIU's restorer registers this VMA with the uffd (criu/include/vma.h vma_entry_can_be_lazy): private
 * anonymous memory, not locked, not hugetlb, not the vdso/vvar/vsyscall.
 */
export function vmaCanBeLazy(v: Pick<MmVma, 'flags' | 'status'>): boolean {
  return (
    (v.flags & MAP_ANONYMOUS) !== 0 &&
    (v.flags & MAP_PRIVATE) !== 0 &&
    (v.flags & (MAP_LOCKED | MAP_HUGETLB)) === 0 &&
    (v.status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL)) === 0
  );
}

/** Encodes an mm image holding only VMAs (for tests: CRIU's other required fields are written as 0). */
export function encodeMmVmas(vmas: readonly MmVma[]): Buffer {
  const w = new WireWriter();
  for (let f = 1; f <= 11; f++) w.uint(f, 0);
  w.uint(12, 0);
  for (const v of vmas) {
    const e = new WireWriter().uint(1, v.start).uint(2, v.end).uint(3, 0).uint(4, 0).uint(5, v.prot).uint(6, v.flags).uint(7, v.status);
    // fd = -1 as CRIU writes it: sint64 zigzag of -1 is 1.
    e.uint(8, 1);
    w.bytes(14, e.finish());
  }
  return writeImage(CRIU_MAGIC.MM, [w.finish()]);
}
