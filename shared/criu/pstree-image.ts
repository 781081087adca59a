/**
 * `pstree.img`: the process tree CRIU dumped, one record per task, in namespace pids.
 * Fields (CRIU images/pstree.proto, checked on CRIU 4.2.1 dumps): pid = 1, ppid = 2, pgid = 3, sid = 4
 * (uint32), threads = 5 (repeated uint32, one varint per thread; packed is accepted too).
 * The root has ppid 0. Threads list the task's own tid first.
 */
import { CRIU_MAGIC, decodingImage, imageError, readImageOf, writeImage } from './image-file.js';
import { WireReader, WireWriter } from './protobuf-wire.js';

export interface PstreeEntry {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
}

export function decodePstree(buf: Buffer, image = 'pstree.img'): PstreeEntry[] {
  const records = readImageOf(buf, 'PSTREE', image);
  if (records.length === 0) throw imageError(image, 'no task');
  return decodingImage(image, () => records.map((r, i) => decodeEntry(r, `${image} entry ${i}`)));
}

function decodeEntry(buf: Uint8Array, where: string): PstreeEntry {
  const r = new WireReader(buf);
  const v: Partial<Record<'pid' | 'ppid' | 'pgid' | 'sid', number>> = {};
  const threads: number[] = [];
  while (!r.done) {
    const t = r.tag();
    switch (t.field) {
      case 1:
        v.pid = r.uint32(t.wireType);
        break;
      case 2:
        v.ppid = r.uint32(t.wireType);
        break;
      case 3:
        v.pgid = r.uint32(t.wireType);
        break;
      case 4:
        v.sid = r.uint32(t.wireType);
        break;
      case 5:
        r.repeatedUint32(t.wireType, threads);
        break;
      default:
        r.skip(t.wireType);
    }
  }
  const { pid, ppid, pgid, sid } = v;
  if (pid === undefined || ppid === undefined || pgid === undefined || sid === undefined) {
    throw imageError(where, 'task entry lacks one of pid, ppid, pgid, sid');
  }
  return { pid, ppid, pgid, sid, threads };
}

/** Encodes pstree.img as CRIU writes it (for tests). */
export function encodePstree(entries: readonly PstreeEntry[]): Buffer {
  return writeImage(
    CRIU_MAGIC.PSTREE,
    entries.map((e) => new WireWriter().uint(1, e.pid).uint(2, e.ppid).uint(3, e.pgid).uint(4, e.sid).repeatedUint32(5, e.threads).finish()),
  );
}
