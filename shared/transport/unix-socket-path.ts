/**
 * Claims the path of a daemon's Unix socket without a moment in which it is open to more callers than it
 * should be, and without ever removing what is not a dead socket:
 *   - the directory is made (0755) if missing, and must then belong to this user and be writable by it alone
 *     (else another user could swap the socket for its own);
 *   - a socket file already there is probed: one that answers belongs to a live agent (refused), one that
 *     refuses the connection was left by a dead one (removed); anything else is never touched;
 *   - the server binds in a private temporary directory, gets its owner and mode there, and is then hard
 *     linked to the path, which fails if another agent took it meanwhile (no clobbering).
 */
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { FerryError } from '../errors/ferry-error.js';

/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
/** How long a socket already at the path has to answer before it counts as dead. */
const PROBE_MS = 1_000;

export interface SocketPathOptions {
  path: string;
  /** undefined: mode 0600, this user only; else mode 0660 and owned by this group. */
  gid?: number | undefined;
}

export interface ClaimedSocketPath {
  path: string;
  /** Removes the path if it is still this server's socket (a successor's is left alone). */
  release(): void;
}

function code(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

function unsafe(detail: string): FerryError {
  return new FerryError('SOURCE_SOCKET_UNSAFE', { detail });
}

function checkDirectory(dir: string): void {
  try {
    statSync(dir);
  } catch (e) {
    if (code(e) !== 'ENOENT') throw unsafe(`${dir}: ${(e as Error).message}`);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    chmodSync(dir, 0o755); // whatever the umask: callers of other uids must reach the socket
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw unsafe(`${dir} is not a directory`);
  if (st.uid !== process.getuid?.()) throw unsafe(`${dir} belongs to uid ${st.uid}, not to this agent's uid ${process.getuid?.()}`);
  if ((st.mode & 0o022) !== 0) throw unsafe(`${dir} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
}

/** 'live', 'dead' or the error code of the probe. */
function probe(path: string): Promise<string> {
  return new Promise((done) => {
    const s = connect(path);
    const finish = (r: string): void => {
      clearTimeout(timer);
      s.destroy();
      done(r);
    };
    const timer = setTimeout(() => finish('ETIMEDOUT'), PROBE_MS);
    s.once('connect', () => finish('live'));
    s.once('error', (e) => finish(code(e) === 'ECONNREFUSED' ? 'dead' : (code(e) ?? e.message)));
  });
}

async function removeDeadSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if (code(e) === 'ENOENT') return;
    throw unsafe(`${path}: ${(e as Error).message}`);
  }
  if (!st.isSocket()) throw unsafe(`${path} exists and is not a socket`);
  const state = await probe(path);
  if (state !== 'dead') throw new FerryError('SOURCE_SOCKET_IN_USE', { detail: `${path}: ${state === 'live' ? 'a server answers on it' : `probe failed with ${state}`}` });
  // Only the file that was probed: a socket created in its place meanwhile is left alone.
  if (lstatSync(path, { throwIfNoEntry: false })?.ino === st.ino) unlinkSync(path);
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((done, fail) => {
    const onError = (e: Error): void => fail(e);
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      done();
    });
  });
}

/** Binds `server` to the path (see the file comment). Throws BAD_ARGUMENT, SOURCE_SOCKET_UNSAFE or SOURCE_SOCKET_IN_USE. */
export async function listenOnSocketPath(server: Server, o: SocketPathOptions): Promise<ClaimedSocketPath> {
  const path = resolve(o.path);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new FerryError('BAD_ARGUMENT', { message: `the socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes`, hint: 'Choose a shorter --socket path.' });
  }
  const dir = dirname(path);
  checkDirectory(dir);
  await removeDeadSocket(path);
  const staging = mkdtempSync(join(dir, '.ferry-'));
  const staged = join(staging, 's');
  if (Buffer.byteLength(staged) > MAX_SOCKET_PATH_BYTES) {
    rmSync(staging, { recursive: true, force: true });
    throw new FerryError('BAD_ARGUMENT', { message: `the directory of ${path} is too long to stage a socket in`, hint: 'Choose a shorter --socket path.' });
  }
  try {
    await listen(server, staged);
    chownSync(staged, process.getuid?.() ?? 0, o.gid ?? process.getgid?.() ?? 0);
    chmodSync(staged, o.gid === undefined ? 0o600 : 0o660);
    try {
      linkSync(staged, path);
    } catch (e) {
      if (code(e) === 'EEXIST') throw new FerryError('SOURCE_SOCKET_IN_USE', { detail: `${path} was created by someone else while this agent started` });
      throw e;
    }
  } catch (e) {
    server.close();
    throw e;
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  const ino = lstatSync(path).ino;
  return {
    path,
    release: () => {
      try {
        if (lstatSync(path, { throwIfNoEntry: false })?.ino === ino) unlinkSync(path);
      } catch {
        /* already gone */
      }
    },
  };
}
