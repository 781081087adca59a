/**
 * One fuzz scenario against the dest: a single hostile call (`lone`), raw byte garbage of an encoded message
 * (`raw`), or a migration the fuzzer drives (`session`: Prepare, then pages, images, restore, commit and
 * abort calls in a random order, each valid, field-mutated or byte-mutated, streams reordered, duplicated or
 * ended early), always ending with a valid Abort. Everything a scenario does comes from its own random
 * stream: `FERRY_FUZZ_SEED=S` and its index replay it. What it saw is returned for the test to judge.
 */
import * as grpc from '@grpc/grpc-js';
import { readdirSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type * as m from '../../shared/transport/messages.js';
import { mutateBytes } from './byte-mutations.js';
import { FuzzRandom } from './fuzz-random.js';
import {
  brokenPagemap,
  uniformBatch,
  dumpImages,
  HUGE_STRING,
  imageChunks,
  MessageFuzzer,
  mutateAbort,
  mutateBatch,
  mutateChunk,
  mutateCommit,
  mutateRestore,
  negotiateRequest,
  pageBatches,
  prepareRequest,
  restoreRequest,
  syntheticDump,
  type SyntheticDump,
} from './dest-messages.js';
import { DEST_CALLS, decodeRequest, encodeRequest, RawDestClient, type CallOutcome, type DestCall, type StreamPlan } from './raw-dest-client.js';

export interface ScenarioEnv {
  seed: number;
  /** The dest agent; every scenario has a connection of its own. */
  address: string;
  deadlineMs: number;
  sandbox: string;
  workDir: string;
  /** Every path-like string a payload carried. */
  namedPaths: Set<string>;
  /** Sessions that live through the whole run, which other scenarios try to reach by id. */
  residentIds: readonly string[];
}

export interface CallRecord {
  scenario: number;
  kind: ScenarioKind;
  step: string;
  ops: string[];
  /** The encoded message was mutated byte by byte. */
  raw: boolean;
  /**
   * The longest string field of the input as the dest decodes it, in bytes of JSON (what an error trailer
   * that echoes it carries), and whether that is HUGE_STRING or more. Measured on the bytes sent, so a
   * byte-mutated message that shifted page data into an id counts too.
   */
  longest: number;
  huge: boolean;
  /** Some message of the input does not decode (the dest's gRPC layer refuses it before any handler). */
  undecodable: boolean;
  /** A wrong epoch was sent for the session whose epoch this is. */
  wrongEpochOf: string | undefined;
  outcome: CallOutcome;
}

/** What a live session holds against what it may: its bytes on disk, or the files the agent has open. */
export interface ResourceCheck {
  scenario: number;
  id: string;
  resource: 'disk' | 'open-files';
  used: number;
  /** Disk: the page data and image bytes sent, and a block per file. Open files: STORE_FILES_BOUND. */
  bound: number;
  zeroPagesSent: number;
}

/** A session's page store may keep this many files open, whatever order its pages came in. */
export const STORE_FILES_BOUND = 256;

export interface ScenarioResult {
  records: CallRecord[];
  resources: ResourceCheck[];
  /** Work dirs the dest named in Prepare answers. */
  workDirs: string[];
}

export type ScenarioKind = 'lone' | 'raw' | 'session' | 'probe';
type Mode = 'valid' | 'fields' | 'raw';

/** A migration id as the source draws one (a UUID), from the scenario's random stream. */
export function fuzzId(rnd: FuzzRandom): string {
  const h = rnd.bytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A random epoch, never 0, as a decimal u64. */
export function fuzzEpoch(rnd: FuzzRandom): string {
  return ((rnd.u64() % (2n ** 64n - 1n)) + 1n).toString();
}

interface Session {
  id: string;
  epoch: string;
  dump: SyntheticDump;
  nextSeq: bigint;
  dataSent: number;
  imageBytesSent: number;
  zeroPagesSent: number;
}

async function allocatedBytes(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return { bytes, files };
  }
  for (const name of names) {
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st) continue;
    files++;
    // Allocated blocks (a sparse file's holes cost nothing), but never more than the size rounded to a
    // block: a file system's speculative preallocation is not the agent's doing.
    bytes += Math.min(st.blocks * 512, Math.ceil(st.size / 4096) * 4096);
    if (st.isDirectory()) {
      const sub = await allocatedBytes(path);
      bytes += sub.bytes;
      files += sub.files;
    }
  }
  return { bytes, files };
}

/**
 * The messages as the dest decodes them: the longest string anywhere in them, in bytes of JSON (0 if none
 * decodes), and whether one does not decode.
 */
function inspect(call: DestCall, encoded: readonly Buffer[]): { longest: number; undecodable: boolean } {
  let longest = 0;
  let undecodable = false;
  const walk = (v: unknown, depth: number): void => {
    if (typeof v === 'string') longest = Math.max(longest, Buffer.byteLength(JSON.stringify(v)));
    else if (Array.isArray(v)) for (const x of v) walk(x, depth + 1);
    else if (v && typeof v === 'object' && !Buffer.isBuffer(v) && depth < 4) for (const x of Object.values(v)) walk(x, depth + 1);
  };
  for (const b of encoded) {
    try {
      walk(decodeRequest(call, b), 0);
    } catch {
      undecodable = true; // the dest refuses it before any handler sees a string
    }
  }
  return { longest, undecodable };
}

/** File descriptors this process has open: the agent runs in it, and nothing else runs during the probes. */
function openFiles(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Per file on disk: a block, and the page level files' rounding. */
const SLACK_PER_FILE = 64 * 1024;

class Scenario {
  readonly records: CallRecord[] = [];
  readonly resources: ResourceCheck[] = [];
  readonly workDirs: string[] = [];
  readonly f: MessageFuzzer;
  private client: RawDestClient;
  /** Sessions a Prepare of this scenario opened (as the dest decoded it: a mutated id or epoch counts) and no Abort ended. */
  private readonly opened = new Map<string, string>();

  constructor(
    readonly index: number,
    readonly kind: ScenarioKind,
    readonly rnd: FuzzRandom,
    private readonly env: ScenarioEnv,
  ) {
    this.client = new RawDestClient(env.address, env.deadlineMs);
    this.f = new MessageFuzzer(rnd, { sandbox: env.sandbox, seed: env.seed, namedPaths: env.namedPaths, otherIds: () => env.residentIds });
  }

  /** Sends bytes as they are, as a raw input. */
  sendEncoded(step: string, call: DestCall, encoded: readonly Buffer[]): Promise<CallOutcome> {
    return this.deliver(step, call, encoded, true, {});
  }

  /** Encodes and sends one call; in raw mode some of its messages are mutated byte by byte. */
  async send(step: string, call: DestCall, messages: readonly unknown[], mode: Mode, plan: StreamPlan = {}): Promise<CallOutcome> {
    let encoded = messages.map((msg) => encodeRequest(call, msg));
    if (mode === 'raw') {
      const hit = this.rnd.int(Math.max(1, encoded.length));
      encoded = encoded.map((b, i) => {
        if (i !== hit && !this.rnd.chance(0.3)) return b;
        if (this.rnd.chance(0.1)) {
          this.f.note('garbage');
          return this.rnd.bytes(this.rnd.int(256));
        }
        const mutated = mutateBytes(this.rnd, b);
        this.f.note(`raw:${mutated.ops.join('+')}`);
        return mutated.bytes;
      });
    }
    return this.deliver(step, call, encoded, mode === 'raw', plan);
  }

  private async deliver(step: string, call: DestCall, encoded: readonly Buffer[], raw: boolean, plan: StreamPlan): Promise<CallOutcome> {
    const outcome = await this.client.call(call, encoded, plan);
    const { longest, undecodable } = inspect(call, encoded);
    if (outcome.code === grpc.status.OK && (call === 'Prepare' || call === 'Abort')) this.track(call, encoded[0]);
    this.records.push({
      scenario: this.index,
      kind: this.kind,
      step,
      ops: [...this.f.ops],
      raw,
      longest,
      huge: longest >= HUGE_STRING,
      undecodable,
      wrongEpochOf: this.f.wrongEpochOf,
      outcome,
    });
    this.f.reset();
    // A call that hung, or whose error may have echoed a huge string even if it was cut short, may have
    // wedged the connection (issue 9): the next call must not pay for it.
    if ((outcome.code === grpc.status.DEADLINE_EXCEEDED && !outcome.trailer) || longest >= HUGE_STRING) {
      this.client.close();
      this.client = new RawDestClient(this.env.address, this.env.deadlineMs);
    }
    return outcome;
  }

  close(): void {
    this.client.close();
  }

  private track(call: 'Prepare' | 'Abort', encoded: Buffer | undefined): void {
    let req: { migrationId: string; epoch: string };
    try {
      req = decodeRequest(call, encoded ?? Buffer.alloc(0)) as typeof req;
    } catch {
      return;
    }
    if (call === 'Prepare') this.opened.set(req.migrationId, req.epoch);
    else if (this.opened.get(req.migrationId) === req.epoch) this.opened.delete(req.migrationId);
  }

  /** Aborts every session this scenario left open: the fuzz holds a bounded number at once. */
  async cleanup(): Promise<void> {
    for (const [migrationId, epoch] of [...this.opened]) await this.send('final-abort', 'Abort', [{ migrationId, epoch, reason: 'fuzz' }], 'valid');
  }

  mode(validWeight: number): Mode {
    return this.rnd.weighted([
      [validWeight, 'valid'],
      [4, 'fields'],
      [2, 'raw'],
    ] as const);
  }

  /** Reorders, duplicates or drops messages of a stream, or plans to cut it short. */
  streamChaos<T>(messages: T[]): { messages: T[]; plan: StreamPlan } {
    const plan: StreamPlan = {};
    if (!this.rnd.chance(0.35) || messages.length === 0) return { messages, plan };
    const what = this.rnd.pick(['shuffle', 'reverse', 'dup', 'drop', 'cut'] as const);
    this.f.note(`stream:${what}`);
    const out = [...messages];
    if (what === 'shuffle') this.rnd.shuffle(out);
    else if (what === 'reverse') out.reverse();
    else if (what === 'dup') out.splice(this.rnd.int(out.length + 1), 0, out[this.rnd.int(out.length)]!);
    else if (what === 'drop') out.splice(this.rnd.int(out.length), 1);
    else plan.cancelAfter = this.rnd.int(out.length + 1);
    return { messages: out, plan };
  }

  async pages(s: Session, mode: Mode): Promise<void> {
    const batches = pageBatches(s.id, s.epoch, s.dump, s.nextSeq, this.rnd);
    s.nextSeq += BigInt(batches.length);
    if (mode === 'fields') {
      let mutated = false;
      for (const [i, b] of batches.entries()) {
        if (this.rnd.chance(0.4) || (!mutated && i === batches.length - 1)) {
          mutateBatch(this.f, b, s.epoch, BigInt(b.seq) - 1n);
          mutated = true;
        }
      }
    }
    const { messages, plan } = this.streamChaos(batches);
    for (const b of messages) {
      s.dataSent += b.data.length;
      s.zeroPagesSent += b.kinds.filter((k) => k === 1).length;
    }
    await this.send('pages', 'StreamPages', messages, mode, plan);
  }

  async images(s: Session, mode: Mode): Promise<void> {
    const images = dumpImages(s.dump);
    if (mode === 'fields' && this.rnd.chance(0.4)) images[images.length - 1]!.data = brokenPagemap(this.f, s.dump);
    const chunks = imageChunks(s.id, s.epoch, images, this.rnd);
    if (mode === 'fields') for (const c of chunks) if (this.rnd.chance(0.3)) mutateChunk(this.f, c, s.epoch);
    const { messages, plan } = this.streamChaos(chunks);
    for (const c of messages) s.imageBytesSent += c.data.length;
    await this.send('images', 'UploadImages', messages, mode, plan);
  }

  async restore(s: Session, mode: Mode): Promise<void> {
    const req = restoreRequest(s.id, s.epoch, s.dump);
    if (mode === 'fields') mutateRestore(this.f, req, s.epoch);
    await this.send('restore', 'Restore', [req], mode);
  }

  async commit(s: Session, mode: Mode): Promise<void> {
    const req: m.CommitRequest = { migrationId: s.id, epoch: s.epoch };
    if (mode === 'fields') mutateCommit(this.f, req, s.epoch);
    await this.send('commit', 'Commit', [req], mode);
  }

  async abort(s: Session, mode: Mode, step = 'abort'): Promise<void> {
    const req: m.AbortRequest = { migrationId: s.id, epoch: s.epoch, reason: 'fuzz' };
    if (mode === 'fields') mutateAbort(this.f, req, s.epoch);
    await this.send(step, 'Abort', [req], mode);
  }

  async prepare(s: Session, mode: Mode, step = 'prepare'): Promise<CallOutcome> {
    const req = prepareRequest(s.id, s.epoch, s.dump, mode === 'fields' ? this.f : undefined);
    const outcome = await this.send(step, 'Prepare', [req], mode);
    const res = outcome.responses[0] as m.PrepareResponse | undefined;
    if (outcome.code === grpc.status.OK && res) this.workDirs.push(res.workDir);
    return outcome;
  }

  async checkDisk(s: Session): Promise<void> {
    const { bytes, files } = await allocatedBytes(join(this.env.workDir, s.id));
    if (files === 0) return; // not (or no longer) a session
    this.resources.push({ scenario: this.index, id: s.id, resource: 'disk', used: bytes, bound: s.dataSent + s.imageBytesSent + SLACK_PER_FILE * files, zeroPagesSent: s.zeroPagesSent });
  }

  newSession(): Session {
    return { id: fuzzId(this.rnd), epoch: fuzzEpoch(this.rnd), dump: syntheticDump(this.rnd), nextSeq: 0n, dataSent: 0, imageBytesSent: 0, zeroPagesSent: 0 };
  }

  async session(): Promise<void> {
    const s = this.newSession();
    const opened = await this.prepare(s, 'valid');
    if (opened.code !== grpc.status.OK) return;
    type Step = 'pages' | 'images' | 'restore' | 'commit' | 'abort' | 'prepare' | 'negotiate';
    const happy = this.rnd.chance(0.35);
    const steps: Step[] = happy
      ? ['pages', 'images', 'restore']
      : Array.from({ length: this.rnd.range(1, 6) }, () =>
          this.rnd.weighted<Step>([
            [5, 'pages'],
            [4, 'images'],
            [3, 'restore'],
            [1, 'commit'],
            [1, 'abort'],
            [1, 'prepare'],
            [1, 'negotiate'],
          ]),
        );
    for (const step of steps) {
      const mode = this.mode(happy ? 10 : 2);
      if (step === 'pages') await this.pages(s, mode);
      else if (step === 'images') await this.images(s, mode);
      else if (step === 'restore') await this.restore(s, mode);
      else if (step === 'commit') await this.commit(s, mode);
      else if (step === 'abort') await this.abort(s, mode);
      else if (step === 'prepare') await this.prepare(s, mode, 'prepare-again');
      else await this.send('negotiate', 'Negotiate', [negotiateRequest(mode === 'fields' ? this.f : undefined)], mode);
      if (step === 'pages' || step === 'images') await this.checkDisk(s);
    }
    await this.cleanup();
  }

  /** One call of any kind for no session of ours: whatever the fuzzer makes of each field. */
  async lone(raw: boolean): Promise<void> {
    const call = this.rnd.pick(DEST_CALLS);
    const s = this.newSession();
    const mode: Mode = raw ? 'raw' : 'fields';
    const fields = mode === 'fields';
    switch (call) {
      case 'Negotiate':
        await this.send('lone', call, [negotiateRequest(fields ? this.f : undefined)], mode);
        return;
      case 'Prepare':
        await this.prepare(s, mode, 'lone');
        await this.cleanup(); // in case it opened one
        return;
      case 'StreamPages': {
        const batches = pageBatches(s.id, s.epoch, s.dump, 0n, this.rnd);
        if (fields) for (const b of batches) mutateBatch(this.f, b, s.epoch, 0n);
        const { messages, plan } = this.streamChaos(batches);
        await this.send('lone', call, messages, mode, plan);
        return;
      }
      case 'UploadImages': {
        const chunks = imageChunks(s.id, s.epoch, dumpImages(s.dump), this.rnd);
        if (fields) for (const c of chunks) mutateChunk(this.f, c, s.epoch);
        const { messages, plan } = this.streamChaos(chunks);
        await this.send('lone', call, messages, mode, plan);
        return;
      }
      case 'Restore':
        await this.restore(s, mode);
        return;
      case 'Commit':
        await this.commit(s, mode);
        return;
      case 'Abort':
        await this.abort(s, mode);
        return;
    }
  }
}

export async function runScenario(index: number, env: ScenarioEnv): Promise<ScenarioResult> {
  const rnd = FuzzRandom.stream(env.seed, index);
  const kind = rnd.weighted<ScenarioKind>([
    [25, 'lone'],
    [15, 'raw'],
    [60, 'session'],
  ]);
  const scenario = new Scenario(index, kind, rnd, env);
  try {
    if (kind === 'session') await scenario.session();
    else await scenario.lone(kind === 'raw');
  } finally {
    scenario.close();
  }
  return { records: scenario.records, resources: scenario.resources, workDirs: scenario.workDirs };
}

/** The scenario index the probes report under (they come first, before scenario 0). */
export const PROBE_SCENARIO = -1;

/**
 * Fixed inputs, run before the random ones, that each hit one finding of issue 9 for sure, so that whether
 * the finding stands is known from every run, whatever the seed. `resident` is a live session of the test.
 */
export async function runProbes(env: ScenarioEnv, resident: { id: string; epoch: string }): Promise<ScenarioResult> {
  const p = new Scenario(PROBE_SCENARIO, 'probe', FuzzRandom.stream(env.seed, 0x7fff_fffe), env);
  try {
    // A length-delimited field whose varint length is cut short: protobufjs cannot decode it.
    p.f.note('truncated-varint');
    await p.sendEncoded('undecodable', 'Commit', [Buffer.from([0x0a, 0x85])]);
    // An id echoed into the trailer: 8,000 characters arrive as a too-large trailer, 100,000 wedge the call.
    await p.send('long-id', 'Commit', [{ migrationId: 'F'.repeat(8_000), epoch: '1' }], 'valid');
    await p.send('huge-id', 'Commit', [{ migrationId: 'F'.repeat(100_000), epoch: '1' }], 'valid');
    // A wrong epoch for a live session.
    await p.send('wrong-epoch', 'Commit', [{ migrationId: resident.id, epoch: p.f.wrongEpoch(resident.epoch) }], 'valid');
    // 2,048 zero pages: 48 KiB on the wire.
    const s = p.newSession();
    if ((await p.prepare(s, 'valid')).code === grpc.status.OK) {
      const batch = uniformBatch(pageBatches(s.id, s.epoch, s.dump, 0n, p.rnd)[0]!, Array.from({ length: 2048 }, (_, i) => (1 << 20) + i), 'zero');
      s.zeroPagesSent += 2048;
      await p.send('zero-pages', 'StreamPages', [batch], 'valid');
      await p.checkDisk(s);
      // With a 20,000-character reason: the session's last log line.
      await p.send('long-reason', 'Abort', [{ migrationId: s.id, epoch: s.epoch, reason: 'F'.repeat(20_000) }], 'valid');
    }
    // A 20,000-character task name: the session's first log line.
    const t = p.newSession();
    await p.send('long-task-name', 'Prepare', [{ ...prepareRequest(t.id, t.epoch, t.dump), taskName: 'F'.repeat(20_000) }], 'valid');
    // 2,000 pages in descending order: each is below the last, so each could start a store level (a file).
    const d = p.newSession();
    if ((await p.prepare(d, 'valid')).code === grpc.status.OK) {
      const before = openFiles();
      const batch = uniformBatch(pageBatches(d.id, d.epoch, d.dump, 0n, p.rnd)[0]!, Array.from({ length: 2000 }, (_, i) => (1 << 20) - i), 'zero');
      await p.send('descending-pages', 'StreamPages', [batch], 'valid');
      p.resources.push({ scenario: PROBE_SCENARIO, id: d.id, resource: 'open-files', used: openFiles() - before, bound: STORE_FILES_BOUND, zeroPagesSent: 2000 });
    }
    await p.cleanup();
  } finally {
    p.close();
  }
  return { records: p.records, resources: p.resources, workDirs: p.workDirs };
}

/**
 * A source whose page streams break mid-way, `times` times in a row, then a whole stream. Each broken stream
 * sends a batch and then one that takes the dest a while (100 pages in descending order, each a new store
 * level), and goes once the first is acknowledged: while the dest stores the second. Run against a dest that
 * allows fewer streams per peer than `times`: the whole stream is refused while the broken ones hold slots.
 */
export async function runBrokenStreamsProbe(env: ScenarioEnv, times: number): Promise<ScenarioResult> {
  const p = new Scenario(PROBE_SCENARIO, 'probe', FuzzRandom.stream(env.seed, 0x7fff_fffd), env);
  try {
    const s = p.newSession();
    if ((await p.prepare(s, 'valid')).code === grpc.status.OK) {
      for (let i = 0; i < times; i++) {
        const [first] = pageBatches(s.id, s.epoch, s.dump, 0n, p.rnd);
        first!.task = 100 + i; // a store of its own: the levels of one never reach the bound
        const slow = uniformBatch({ ...first!, seq: '1' }, Array.from({ length: 100 }, (_, k) => 10_000 - k), 'zero');
        await p.send('broken-stream', 'StreamPages', [first, slow], 'valid', { cancelAfter: 2, cancelWhenAcked: 1 });
      }
      const whole = pageBatches(s.id, s.epoch, s.dump, s.nextSeq, p.rnd);
      await p.send('after-broken-streams', 'StreamPages', whole, 'valid');
    }
    await p.cleanup();
  } finally {
    p.close();
  }
  return { records: p.records, resources: p.resources, workDirs: p.workDirs };
}
