/**
 * The messages the dest fuzz sends: valid ones for a migration the fuzzer drives (a small synthetic dump: its
 * pages, its pagemap, the images of a real CRIU dump, the manifest), and field-level mutations of each
 * message type (huge, empty and path-like strings, edge numbers, wrong epochs, broken page batches). Every
 * mutation is named in `ops`; strings that name paths are collected so the test can check that none of them
 * appeared on disk.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { encodePagemap, PE_LAZY, PE_PRESENT } from '../../shared/criu/pagemap-image.js';
import { PAGE_SIZE } from '../../shared/kernel/page-size.js';
import { hashPages } from '../../shared/native/addon.js';
import { HASH_BYTES } from '../../shared/pages/page-hash-index.js';
import type * as m from '../../shared/transport/messages.js';
import { PAGE_KIND_DATA, PAGE_KIND_ZERO, writePageNumber } from '../../shared/transport/page-batch.js';
import { sourcePeer } from '../support/dest-grpc.js';
import { mutateBytes } from './byte-mutations.js';
import type { FuzzRandom } from './fuzz-random.js';
import { mutatePagemap } from './image-mutations.js';

/** A string this long (as JSON) echoed into the error trailer is what wedged a connection in issue 9. */
export const HUGE_STRING = 16 * 1024;

const FIXTURE = fileURLToPath(new URL('../fixtures/criu/single/', import.meta.url));
const fixtureImage = (name: string): Buffer => readFileSync(`${FIXTURE}${name}`);

const MAX_U64 = '18446744073709551615';
const U64_EDGES = ['0', '1', '4095', '4096', '2147483648', '4294967295', '4294967296', '9007199254740991', '9007199254740993', '9223372036854775808', MAX_U64];
const U32_EDGES = [0, 1, 2, 7, 255, 4096, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 2, 2 ** 32 - 1];

/** What one scenario knows while it builds messages: its random source and what it has to report. */
export class MessageFuzzer {
  readonly ops: string[] = [];
  /** A wrong epoch was sent on purpose to the session whose epoch is this. */
  wrongEpochOf: string | undefined;

  constructor(
    readonly rnd: FuzzRandom,
    private readonly env: { sandbox: string; seed: number; namedPaths: Set<string>; otherIds: () => readonly string[] },
  ) {}

  note(op: string): void {
    this.ops.push(op);
  }


  /** Starts a new input: what is reported is per call. */
  reset(): void {
    this.ops.length = 0;
    this.wrongEpochOf = undefined;
  }

  private pathLike(): string {
    const escape = `ferry-fuzz-escape-${this.env.seed}`;
    const p = this.rnd.pick([
      '..',
      '.',
      '../outside/escape.img',
      '../../outside/escape.img',
      '../../../outside/escape',
      `${this.env.sandbox}/outside/escape.img`,
      `/tmp/${escape}.img`,
      `../${escape}`,
      `images/../../${escape}`,
      'a/b.img',
      '/etc/passwd',
      '..\\..\\escape.img',
      '%2e%2e%2fescape.img',
      `${escape}\0.img`,
      `./${escape}.img`,
      '~/escape.img',
      'logs',
      'pages',
      'images',
      'parent',
    ]);
    this.env.namedPaths.add(p);
    return p;
  }

  /** A string for a field: valid-looking, empty, path-like, unicode, control characters, or huge. */
  string(valid: string): string {
    const kind = this.rnd.weighted([
      [6, 'path'],
      [3, 'empty'],
      [3, 'long'],
      [3, 'unicode'],
      [2, 'other-session'],
      [2, 'format'],
      [2, 'near'],
      [1, 'huge'],
    ] as const);
    this.note(`str:${kind}`);
    switch (kind) {
      case 'path':
        return this.pathLike();
      case 'empty':
        return '';
      case 'long':
        return 'a'.repeat(this.rnd.range(65, 4000));
      case 'unicode':
        return this.rnd.pick(['\u00fcml\u00e4ut', '\u{1F600}'.repeat(this.rnd.range(1, 40)), '\u202e.img', '\ud800', 'x\u0000y', '\n\r\t', 'caf\u00e9-1234-5678']);
      case 'other-session':
        return this.env.otherIds().length > 0 ? this.rnd.pick(this.env.otherIds()) : valid;
      case 'format':
        return this.rnd.pick(['%s%s%s%n', '${jndi:x}', '{{7*7}}', "'; rm -rf /", '-rf', '--help', ' ']);
      case 'near':
        // One character off: case, a dot, a dash, a trailing space.
        return this.rnd.pick([valid.toUpperCase(), `${valid}.`, `${valid} `, `-${valid}`, valid.slice(1)]);
      case 'huge':
        return 'F'.repeat(this.rnd.range(HUGE_STRING, 120_000));
    }
  }

  u32(): number {
    this.note('u32');
    return this.rnd.chance(0.8) ? this.rnd.pick(U32_EDGES) : this.rnd.u32();
  }

  u64(): string {
    this.note('u64');
    return this.rnd.chance(0.8) ? this.rnd.pick(U64_EDGES) : this.rnd.u64().toString();
  }

  /** Another epoch than the session's: next to it, zero, the largest, or random. */
  wrongEpoch(epoch: string): string {
    this.note('epoch');
    this.wrongEpochOf = epoch;
    const e = BigInt(epoch);
    const candidates = [e + 1n, e - 1n, 0n, 2n ** 64n - 1n, this.rnd.u64()].filter((x) => x >= 0n && x < 2n ** 64n && x !== e);
    return this.rnd.pick(candidates).toString();
  }

  bytes(original: Buffer): Buffer {
    const kind = this.rnd.weighted([
      [3, 'mutate'],
      [2, 'empty'],
      [1, 'random'],
      [1, 'big'],
    ] as const);
    this.note(`bytes:${kind}`);
    switch (kind) {
      case 'mutate':
        return mutateBytes(this.rnd, original, 2).bytes;
      case 'empty':
        return Buffer.alloc(0);
      case 'random':
        return this.rnd.bytes(this.rnd.range(1, 256));
      case 'big':
        return Buffer.alloc(this.rnd.range(64 * 1024, 1024 * 1024), this.rnd.u32() & 0xff);
    }
  }

  /** Applies 1..n of `mutators` (named) to `target`. */
  apply<T>(target: T, mutators: readonly (readonly [string, (t: T) => void])[], n = 3): T {
    for (let k = this.rnd.range(1, n); k > 0; k--) {
      const [name, mutate] = this.rnd.pick(mutators);
      this.note(name);
      mutate(target);
    }
    return target;
  }
}

/** The pages, pagemap and hashes of a small task, as a dump would describe it. */
export interface SyntheticDump {
  task: number;
  /** Page numbers, ascending. */
  pages: number[];
  contents: Buffer[];
  zero: boolean[];
  pagemap: Buffer;
  pagemapName: string;
  /** One hash per page, in pagemap order. */
  hashes: Buffer;
}

export function syntheticDump(rnd: FuzzRandom): SyntheticDump {
  const task = rnd.chance(0.8) ? rnd.range(1, 4) : rnd.range(5, 4_000_000);
  const pages: number[] = [];
  const entries: { vaddr: bigint; nrPages: number; flags: number }[] = [];
  let next = rnd.range(16, 1 << 20);
  for (let run = rnd.range(1, 4); run > 0; run--) {
    const n = rnd.range(1, 6);
    entries.push({ vaddr: BigInt(next) * BigInt(PAGE_SIZE), nrPages: n, flags: rnd.chance(0.5) ? PE_PRESENT : PE_LAZY | PE_PRESENT });
    for (let i = 0; i < n; i++) pages.push(next + i);
    next += n + rnd.range(1, 1000);
  }
  const zero = pages.map(() => rnd.chance(0.2));
  const contents = pages.map((_, i) => {
    if (zero[i]) return Buffer.alloc(PAGE_SIZE);
    const b = Buffer.alloc(PAGE_SIZE, rnd.u32() & 0xff);
    rnd.bytes(32).copy(b);
    return b;
  });
  const hashes = Buffer.alloc(pages.length * HASH_BYTES);
  hashPages(Buffer.concat(contents), pages.length, PAGE_SIZE, hashes);
  return { task, pages, contents, zero, pagemap: encodePagemap({ pagesId: 1, entries }), pagemapName: `pagemap-${task}.img`, hashes };
}

/** A pagemap that decodes but says something wrong, or that does not decode at all. */
export function brokenPagemap(f: MessageFuzzer, dump: SyntheticDump): Buffer {
  if (f.rnd.chance(0.5)) {
    const m = mutateBytes(f.rnd, dump.pagemap, 3);
    f.note(`pagemap:${m.ops.join('+')}`);
    return m.bytes;
  }
  const entries = dump.pages.map((p) => ({ vaddr: BigInt(p) * BigInt(PAGE_SIZE), nrPages: 1, flags: PE_PRESENT }));
  const m = mutatePagemap(f.rnd, { pagesId: 1, entries });
  f.note(`pagemap:${m.ops.join('+')}`);
  return m.bytes;
}

export function negotiateRequest(f?: MessageFuzzer): m.NegotiateRequest {
  const req: m.NegotiateRequest = { source: sourcePeer([1]) };
  if (!f) return req;
  if (f.rnd.chance(0.1)) {
    f.note('no-source');
    return { source: null } as unknown as m.NegotiateRequest;
  }
  return f.apply(req, [
    ['versions', (r) => void (r.source.protocolVersions = Array.from({ length: f.rnd.range(0, 10_000) }, () => f.rnd.pick(U32_EDGES)))],
    ['page-size', (r) => void (r.source.pageSize = f.u32())],
    ['hostname', (r) => void (r.source.hostname = f.string('fuzz'))],
    ['arch', (r) => void (r.source.arch = f.string(process.arch))],
    ['features', (r) => void (r.source.features = Array.from({ length: f.rnd.range(1, 50) }, () => f.string('page-hash-xxh3-128')))],
    ['trackers', (r) => void (r.source.trackers = [f.string('hash')])],
    ['external-mounts', (r) => void (r.externalMounts = Array.from({ length: f.rnd.range(0, 600) }, () => f.string('/tmp')))],
  ]);
}

export function prepareRequest(id: string, epoch: string, dump: SyntheticDump, f?: MessageFuzzer): m.PrepareRequest {
  const req: m.PrepareRequest = {
    migrationId: id,
    epoch,
    protocolVersion: 1,
    requiredPids: [],
    expectedBytes: String(dump.pages.length * PAGE_SIZE),
    taskName: 'fuzz',
  };
  if (!f) return req;
  return f.apply(req, [
    ['id', (r) => void (r.migrationId = f.string(id))],
    ['epoch', (r) => void (r.epoch = f.rnd.chance(0.5) ? f.wrongEpoch(epoch) : f.u64())],
    ['version', (r) => void (r.protocolVersion = f.u32())],
    // Pids that cannot exist (above pid_max) keep the check busy without clashing with this host.
    ['pids', (r) => void (r.requiredPids = Array.from({ length: f.rnd.range(1, 5000) }, () => f.rnd.pick([4_194_305, 2 ** 32 - 1, 4_194_400 + f.rnd.int(1000)])))],
    ['pids-dup', (r) => void (r.requiredPids = Array.from({ length: f.rnd.range(2, 100) }, () => 4_194_399))],
    ['pid-zero', (r) => void (r.requiredPids = [0])],
    ['pid-taken', (r) => void (r.requiredPids = [process.pid])],
    ['bytes', (r) => void (r.expectedBytes = f.u64())],
    ['task-name', (r) => void (r.taskName = f.string('fuzz'))],
  ]);
}

/** The dump's pages in batches of 1..8, ascending, seqs from `firstSeq`. */
export function pageBatches(id: string, epoch: string, dump: SyntheticDump, firstSeq: bigint, rnd: FuzzRandom): m.PageBatchMessage[] {
  const out: m.PageBatchMessage[] = [];
  let seq = firstSeq;
  for (let i = 0; i < dump.pages.length; ) {
    const n = Math.min(dump.pages.length - i, rnd.range(1, 8));
    const pageNumbers = Buffer.alloc(n * 8);
    const kinds = Buffer.alloc(n);
    const data: Buffer[] = [];
    for (let k = 0; k < n; k++) {
      writePageNumber(pageNumbers, k, dump.pages[i + k]!);
      kinds[k] = dump.zero[i + k] ? PAGE_KIND_ZERO : PAGE_KIND_DATA;
      if (!dump.zero[i + k]) data.push(dump.contents[i + k]!);
    }
    out.push({
      migrationId: id,
      epoch,
      seq: String(seq++),
      round: 0,
      task: dump.task,
      pageNumbers,
      hashes: Buffer.from(dump.hashes.subarray(i * HASH_BYTES, (i + n) * HASH_BYTES)),
      kinds,
      data: Buffer.concat(data),
    });
    i += n;
  }
  return out;
}

/** Sets the batch to `pages`, all zero pages or all data pages filled with `fill`, with their right hashes. */
export function uniformBatch(b: m.PageBatchMessage, pages: readonly number[], fill: 'zero' | number): m.PageBatchMessage {
  const n = pages.length;
  const pageNumbers = Buffer.alloc(n * 8);
  pages.forEach((p, i) => writePageNumber(pageNumbers, i, p));
  const contents = Buffer.alloc(n * PAGE_SIZE, fill === 'zero' ? 0 : fill);
  const hashes = Buffer.alloc(n * HASH_BYTES);
  hashPages(contents, n, PAGE_SIZE, hashes);
  return Object.assign(b, {
    pageNumbers,
    hashes,
    kinds: Buffer.alloc(n, fill === 'zero' ? PAGE_KIND_ZERO : PAGE_KIND_DATA),
    data: fill === 'zero' ? Buffer.alloc(0) : contents,
  });
}

/** Many pages in one batch: zero pages (cheap on the wire) or data pages (a few MiB), ascending or not. */
function oversizedBatch(f: MessageFuzzer, b: m.PageBatchMessage): void {
  const zero = f.rnd.chance(0.7);
  const n = zero ? f.rnd.range(1000, 2048) : f.rnd.range(64, 512);
  const start = f.rnd.range(0, 1 << 30);
  const descending = f.rnd.chance(0.5);
  uniformBatch(b, Array.from({ length: n }, (_, i) => (descending ? start + n - i : start + i)), zero ? 'zero' : f.rnd.range(1, 255));
  f.note(`oversized:${n}${zero ? 'z' : 'd'}${descending ? '-desc' : ''}`);
}

export function mutateBatch(f: MessageFuzzer, b: m.PageBatchMessage, epoch: string, lastSeq: bigint): void {
  f.apply(b, [
    ['b.id', (x) => void (x.migrationId = f.string(x.migrationId))],
    ['b.epoch', (x) => void (x.epoch = f.wrongEpoch(epoch))],
    ['b.seq-repeat', (x) => void (x.seq = String(lastSeq))],
    ['b.seq-edge', (x) => void (x.seq = f.u64())],
    ['b.round', (x) => void (x.round = f.u32())],
    ['b.task', (x) => void (x.task = f.u32())],
    ['b.numbers-cut', (x) => void (x.pageNumbers = x.pageNumbers.subarray(0, Math.max(0, x.pageNumbers.length - f.rnd.range(1, 8))))],
    ['b.numbers-extra', (x) => void (x.pageNumbers = Buffer.concat([x.pageNumbers, f.rnd.bytes(f.rnd.pick([1, 7, 8, 16]))]))],
    [
      'b.number-edge',
      (x) => {
        if (x.pageNumbers.length < 8) return;
        const i = f.rnd.int(Math.floor(x.pageNumbers.length / 8));
        x.pageNumbers = Buffer.from(x.pageNumbers);
        x.pageNumbers.writeBigUInt64LE(f.rnd.pick([2n ** 45n, 2n ** 45n - 1n, 2n ** 52n, 2n ** 63n, 2n ** 64n - 1n, 0n]), i * 8);
      },
    ],
    [
      'b.number-dup',
      (x) => {
        if (x.pageNumbers.length < 16) return;
        x.pageNumbers = Buffer.from(x.pageNumbers);
        x.pageNumbers.copy(x.pageNumbers, 8, 0, 8);
      },
    ],
    ['b.hashes', (x) => void (x.hashes = f.bytes(x.hashes))],
    [
      'b.hash-flip',
      (x) => {
        if (x.hashes.length === 0) return;
        x.hashes = Buffer.from(x.hashes);
        x.hashes[f.rnd.int(x.hashes.length)]! ^= 0x01;
      },
    ],
    [
      'b.kind',
      (x) => {
        if (x.kinds.length === 0) return;
        x.kinds = Buffer.from(x.kinds);
        x.kinds[f.rnd.int(x.kinds.length)] = f.rnd.pick([0, 1, 2, 0x7f, 0xff]);
      },
    ],
    ['b.kinds-cut', (x) => void (x.kinds = x.kinds.subarray(0, Math.max(0, x.kinds.length - 1)))],
    ['b.data', (x) => void (x.data = f.bytes(x.data))],
    ['b.data-cut', (x) => void (x.data = x.data.subarray(0, Math.max(0, x.data.length - f.rnd.pick([1, 4095, 4096]))))],
    ['b.empty', (x) => void Object.assign(x, { pageNumbers: Buffer.alloc(0), hashes: Buffer.alloc(0), kinds: Buffer.alloc(0), data: Buffer.alloc(0) })],
    ['b.oversized', (x) => oversizedBatch(f, x)],
  ]);
}

/** The images of the dump: CRIU's inventory, pstree and core of a real dump, and the synthetic pagemap. */
export function dumpImages(dump: SyntheticDump): { name: string; data: Buffer }[] {
  return [
    { name: 'inventory.img', data: fixtureImage('inventory.img') },
    { name: 'pstree.img', data: fixtureImage('pstree.img') },
    { name: `core-${dump.task}.img`, data: fixtureImage('core-1.img') },
    { name: dump.pagemapName, data: dump.pagemap },
  ];
}

/** Each image in 1..3 chunks at increasing offsets, as the source sends them. */
export function imageChunks(id: string, epoch: string, images: readonly { name: string; data: Buffer }[], rnd: FuzzRandom): m.ImageChunk[] {
  const out: m.ImageChunk[] = [];
  for (const { name, data } of images) {
    const cuts = [0, ...Array.from({ length: rnd.range(0, 2) }, () => rnd.int(data.length + 1)).sort((a, b) => a - b), data.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      if (i > 0 && cuts[i] === cuts[i + 1]) continue;
      out.push({ migrationId: id, epoch, name, offset: String(cuts[i]), data: data.subarray(cuts[i], cuts[i + 1]), totalSize: String(data.length) });
    }
  }
  return out;
}

export function mutateChunk(f: MessageFuzzer, c: m.ImageChunk, epoch: string): void {
  f.apply(c, [
    ['c.id', (x) => void (x.migrationId = f.string(x.migrationId))],
    ['c.epoch', (x) => void (x.epoch = f.wrongEpoch(epoch))],
    ['c.name', (x) => void (x.name = f.string(x.name))],
    ['c.name-pages', (x) => void (x.name = f.rnd.pick(['pages-1.img', 'pages-0.img', 'pages-999999999999.img']))],
    ['c.offset', (x) => void (x.offset = f.u64())],
    ['c.total', (x) => void (x.totalSize = f.u64())],
    ['c.total-small', (x) => void (x.totalSize = String(Math.max(0, x.data.length - 1)))],
    ['c.data', (x) => void (x.data = f.bytes(x.data))],
  ]);
}

export function restoreRequest(id: string, epoch: string, dump: SyntheticDump): m.RestoreRequest {
  return { migrationId: id, epoch, pages: [{ pagemapImage: dump.pagemapName, task: dump.task, hashes: dump.hashes }], timeoutMs: 30_000, commitLeaseMs: 30_000 };
}

/** Manifests carry at most this many bytes in all: the message stays under the 64 MiB limit. */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export function mutateRestore(f: MessageFuzzer, r: m.RestoreRequest, epoch: string): void {
  mutateRestoreFields(f, r, epoch);
  let total = 0;
  r.pages = r.pages.filter((p) => (total += p.hashes.length + p.pagemapImage.length * 3) <= MAX_MANIFEST_BYTES);
}

function mutateRestoreFields(f: MessageFuzzer, r: m.RestoreRequest, epoch: string): void {
  f.apply(r, [
    ['r.id', (x) => void (x.migrationId = f.string(x.migrationId))],
    ['r.epoch', (x) => void (x.epoch = f.wrongEpoch(epoch))],
    ['r.no-pages', (x) => void (x.pages = [])],
    ['r.dup-manifest', (x) => void (x.pages = [...x.pages, ...x.pages].map((p) => ({ ...p })))],
    ['r.many-manifests', (x) => void (x.pages = x.pages[0] ? Array.from({ length: f.rnd.range(2, 2000) }, () => ({ ...x.pages[0]! })) : [])],
    ['r.name', (x) => x.pages[0] && void (x.pages[0].pagemapImage = f.string(x.pages[0].pagemapImage))],
    ['r.name-other', (x) => x.pages[0] && void (x.pages[0].pagemapImage = f.rnd.pick(['inventory.img', 'pstree.img', 'core-1.img', 'pagemap-shmem-1.img']))],
    ['r.task', (x) => x.pages[0] && void (x.pages[0].task = f.u32())],
    ['r.hashes', (x) => x.pages[0] && void (x.pages[0].hashes = f.bytes(x.pages[0].hashes))],
    ['r.hashes-huge', (x) => x.pages[0] && void (x.pages[0].hashes = Buffer.alloc(HASH_BYTES * f.rnd.range(1 << 12, 1 << 16)))],
    ['r.timeout', (x) => void (x.timeoutMs = f.u32())],
    ['r.lease', (x) => void (x.commitLeaseMs = f.u32())],
  ]);
}

export function mutateCommit(f: MessageFuzzer, c: m.CommitRequest, epoch: string): void {
  f.apply(c, [
    ['commit.id', (x) => void (x.migrationId = f.string(x.migrationId))],
    ['commit.epoch', (x) => void (x.epoch = f.wrongEpoch(epoch))],
  ]);
}

export function mutateAbort(f: MessageFuzzer, a: m.AbortRequest, epoch: string): void {
  f.apply(a, [
    ['abort.id', (x) => void (x.migrationId = f.string(x.migrationId))],
    ['abort.epoch', (x) => void (x.epoch = f.wrongEpoch(epoch))],
    ['abort.reason', (x) => void (x.reason = f.string('fuzz'))],
  ]);
}
