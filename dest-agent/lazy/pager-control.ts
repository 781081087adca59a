/**
 * The agent's side of the pager's control socket (AF_UNIX stream, one connection at a time: a new one replaces
 * the old, which is how a restarted agent adopts a running pager). Frames, little-endian:
 *
 *   header (32 B): u32 type; u32 task; u64 index; u64 count; u32 flags; u32 payload_len; then the payload
 *   agent -> pager: 1 CONFIRM (pages [index, +count) of task match the original), 2 REPLACE (payload = count
 *                   pages of the original's bytes, count <= 64)
 *   pager -> agent: 101 HELLO (status JSON), 102 WANT (flags bit0 = BYTES: the store's copy is damaged, send
 *                   REPLACE), 103 PROGRESS (stats JSON), 104 DONE (stats JSON), 105 FAILED (reason text)
 *
 * `task` is the task's ns pid (the plan's ns_pid, the image pid). Parsing is bounded: a frame whose type is
 * unknown or whose payload exceeds the bound ends the connection with a `closed` event naming it.
 */
import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { PAGE_SIZE } from '../../shared/criu/pagemap-image.js';

export const FRAME_HEADER_BYTES = 32;
export const MAX_REPLACE_PAGES = 64;
/** The pager's bound on a payload (64 pages and a 4 KiB JSON), kept here for both directions. */
export const MAX_PAYLOAD_BYTES = MAX_REPLACE_PAGES * PAGE_SIZE + 4096;

export const FrameType = {
  CONFIRM: 1,
  REPLACE: 2,
  HELLO: 101,
  WANT: 102,
  PROGRESS: 103,
  DONE: 104,
  FAILED: 105,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const WANT_BYTES = 1;

export interface Frame {
  type: number;
  task: number;
  index: number;
  count: number;
  flags: number;
  payload: Buffer;
}

/** The pager's counters (status file, PROGRESS and DONE). */
export interface PagerStats {
  filledPages: number;
  totalPages: number;
  faults: number;
  faultsWaited: number;
  zeroPages: number;
  replacedPages: number;
  damagedPages: number;
  droppedPages: number;
  forks: number;
  /** From RSTF (criu restore finished) to the last page. */
  fillUs: number;
  /** From RSTF to the first fault (0 when it came before RSTF or none came). */
  firstFaultUs: number;
  threads: number;
  /**
   * Tasks criu restored whose memory went away before all their pages were in (their pages count as dropped).
   * Not 0 means DONE does not prove the copy runs: check the restored root before the original is killed.
   */
  exitedTasks: number;
  /** Post-copy: pages of the plan with no bytes on the dest (REMOTE_FILE): each is served from a REPLACE. */
  remotePages: number;
  /** Faults that waited (page not ready at the fault), from the fault's read to its wake: median, 99th, max (0 when none). */
  waitP50Us: number;
  waitP99Us: number;
  waitMaxUs: number;
}

export type PagerState = 'listening' | 'serving' | 'filled' | 'failed';

export interface PagerStatus extends PagerStats {
  state: PagerState;
  pid: number;
  guardianPid: number;
  reason: string;
}

export interface PagerWant {
  task: number;
  index: number;
  count: number;
  /** The store's copy failed its hash: only REPLACE answers it. */
  bytes: boolean;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

export function encodeFrame(f: Omit<Frame, 'payload'> & { payload?: Uint8Array }): Buffer {
  const payload = f.payload ?? Buffer.alloc(0);
  if (payload.length > MAX_PAYLOAD_BYTES) throw new FrameError(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const out = Buffer.alloc(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32LE(f.type, 0);
  out.writeUInt32LE(f.task, 4);
  out.writeBigUInt64LE(BigInt(f.index), 8);
  out.writeBigUInt64LE(BigInt(f.count), 16);
  out.writeUInt32LE(f.flags, 24);
  out.writeUInt32LE(payload.length, 28);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

const KNOWN_FROM_PAGER: ReadonlySet<number> = new Set([FrameType.HELLO, FrameType.WANT, FrameType.PROGRESS, FrameType.DONE, FrameType.FAILED]);

/** Splits a byte stream into frames. Throws FrameError on a frame the pager never sends or one out of bounds. */
export class FrameParser {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) return frames;
      const head = this.peek(FRAME_HEADER_BYTES);
      const type = head.readUInt32LE(0);
      const len = head.readUInt32LE(28);
      if (!KNOWN_FROM_PAGER.has(type)) throw new FrameError(`unknown frame type ${type}`);
      if (len > MAX_PAYLOAD_BYTES) throw new FrameError(`frame ${type}: payload of ${len} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
      const index = head.readBigUInt64LE(8);
      const count = head.readBigUInt64LE(16);
      if (index > BigInt(Number.MAX_SAFE_INTEGER) || count > BigInt(Number.MAX_SAFE_INTEGER)) throw new FrameError(`frame ${type}: index or count out of range`);
      if (this.buffered < FRAME_HEADER_BYTES + len) return frames;
      const whole = this.take(FRAME_HEADER_BYTES + len);
      frames.push({
        type,
        task: head.readUInt32LE(4),
        index: Number(index),
        count: Number(count),
        flags: head.readUInt32LE(24),
        payload: whole.subarray(FRAME_HEADER_BYTES),
      });
    }
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0]?.length ?? 0) < n) this.chunks = [Buffer.concat(this.chunks)];
    return (this.chunks[0] as Buffer).subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}

function parseJson<T>(payload: Buffer, what: string): T {
  try {
    const v: unknown = JSON.parse(payload.toString('utf8'));
    if (typeof v !== 'object' || v === null) throw new Error('not an object');
    return v as T;
  } catch (e) {
    throw new FrameError(`${what}: bad JSON (${e instanceof Error ? e.message : String(e)})`);
  }
}

export interface PagerControlEvents {
  hello: [status: PagerStatus];
  want: [want: PagerWant];
  progress: [stats: PagerStats];
  done: [stats: PagerStats];
  failed: [reason: string];
  /** The connection ended: `reason` says why (EOF, a bad frame, close()). */
  closed: [reason: string];
}

export interface ConnectPagerOptions {
  /** Bound on connecting and on the HELLO. Default 5 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One control connection to a pager. Create with `connectPager`. */
export class PagerControl extends EventEmitter<PagerControlEvents> {
  private readonly parser = new FrameParser();
  private ended = false;
  private held: Frame[] = [];
  private holding = false;
  /** The status the pager sent on connecting. */
  hello: PagerStatus | undefined;

  constructor(private readonly socket: Socket) {
    super();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.end(`socket error: ${e.message}`));
    socket.on('close', () => this.end('closed by the pager'));
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Pages [index, index+count) of task match the frozen original. Resolves once written (back-pressure). */
  confirm(task: number, index: number, count: number): Promise<void> {
    return this.write(encodeFrame({ type: FrameType.CONFIRM, task, index, count, flags: 0 }));
  }

  /** The original's bytes of pages [index, ...) of task (whole pages); sent as frames of at most 64 pages. */
  async replace(task: number, index: number, pages: Uint8Array): Promise<void> {
    if (pages.length === 0 || pages.length % PAGE_SIZE !== 0) throw new FrameError(`replace: ${pages.length} bytes are not whole pages`);
    const n = pages.length / PAGE_SIZE;
    for (let k = 0; k < n; k += MAX_REPLACE_PAGES) {
      const c = Math.min(MAX_REPLACE_PAGES, n - k);
      await this.write(encodeFrame({ type: FrameType.REPLACE, task, index: index + k, count: c, flags: 0, payload: pages.subarray(k * PAGE_SIZE, (k + c) * PAGE_SIZE) }));
    }
  }

  close(): void {
    this.socket.destroy();
    this.end('closed by the agent');
  }

  private write(buf: Buffer): Promise<void> {
    if (this.ended) return Promise.reject(new FrameError('the control connection is closed'));
    return new Promise((resolve, reject) => {
      const ok = this.socket.write(buf, (e) => {
        if (e) reject(e);
        else if (ok) resolve();
      });
      if (!ok) {
        const onDrain = (): void => {
          this.off('closed', onClosed);
          resolve();
        };
        const onClosed = (): void => {
          this.socket.off('drain', onDrain);
          reject(new FrameError('the control connection closed while writing'));
        };
        this.socket.once('drain', onDrain);
        this.once('closed', onClosed);
      }
    });
  }

  private onData(chunk: Buffer): void {
    if (this.ended) return;
    let frames: Frame[];
    try {
      frames = this.parser.push(chunk);
    } catch (e) {
      this.socket.destroy();
      this.end(`bad frame from the pager: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    this.held.push(...frames);
    this.deliver();
  }

  /**
   * Frames after the HELLO wait for the next macrotask (the socket paused meanwhile): connectPager resolves on
   * the HELLO, and the caller's listeners, attached right after its await, must not miss a WANT that came in the
   * same chunk.
   */
  private deliver(): void {
    while (this.held.length > 0 && !this.ended && !this.holding) {
      const f = this.held.shift() as Frame;
      try {
        this.dispatch(f);
      } catch (e) {
        this.socket.destroy();
        this.end(`bad frame from the pager: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      if (f.type === FrameType.HELLO && this.held.length > 0) {
        this.holding = true;
        this.socket.pause();
        setImmediate(() => {
          this.holding = false;
          this.socket.resume();
          this.deliver();
        });
      }
    }
  }

  private dispatch(f: Frame): void {
    switch (f.type) {
      case FrameType.HELLO:
        this.hello = parseJson<PagerStatus>(f.payload, 'HELLO');
        this.emit('hello', this.hello);
        return;
      case FrameType.WANT:
        if (f.count === 0 || f.payload.length !== 0) throw new FrameError(`WANT of ${f.count} pages with ${f.payload.length} payload bytes`);
        this.emit('want', { task: f.task, index: f.index, count: f.count, bytes: (f.flags & WANT_BYTES) !== 0 });
        return;
      case FrameType.PROGRESS:
        this.emit('progress', parseJson<PagerStats>(f.payload, 'PROGRESS'));
        return;
      case FrameType.DONE:
        this.emit('done', parseJson<PagerStats>(f.payload, 'DONE'));
        return;
      case FrameType.FAILED:
        this.emit('failed', f.payload.toString('utf8').slice(0, 4096));
        return;
    }
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.emit('closed', reason);
  }
}

/**
 * Connects to a pager's control socket and resolves once its HELLO arrived (`control.hello` holds the status).
 * Throws PAGER_UNAVAILABLE when it cannot connect or no HELLO comes within the bound.
 */
export function connectPager(path: string, opts: ConnectPagerOptions = {}): Promise<PagerControl> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const socket = netConnect({ path });
    const control = new PagerControl(socket);
    const fail = (why: string): void => {
      cleanup();
      socket.destroy();
      reject(new FerryError('PAGER_UNAVAILABLE', { phase: 'restore', side: 'dest', message: 'The pager does not answer on its control socket', detail: `${path}: ${why}` }));
    };
    const onHello = (): void => {
      cleanup();
      resolve(control);
    };
    const onClosed = (why: string): void => fail(why);
    const onAbort = (): void => fail('aborted');
    const timer = setTimeout(() => fail(`no HELLO within ${timeoutMs} ms`), timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      control.off('hello', onHello);
      control.off('closed', onClosed);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    control.once('hello', onHello);
    control.once('closed', onClosed);
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
