/**
 * `criu dump --lazy-pages`: the freeze without writing the task's memory. CRIU writes every image but leaves
 * the anonymous memory out (pagemap entries flagged PE_LAZY, no data), keeps the tree frozen under ptrace
 * and serves those pages on a socket until the session ends. Ferry never asks it for a page: it reads the
 * final delta from the frozen task itself (process_vm_readv works on a task another tracer holds), then
 * ends the session; CRIU exits 0 and leaves the tree stopped (--leave-stopped).
 *
 * The socket is one end of a connected pair (--ps-socket FD, no listener: CRIU's page server has no
 * authentication). It is a stdio 'pipe' of the spawn, which libuv makes as a socketpair whose child end is
 * blocking; a net.Socket handed over instead would be non-blocking and CRIU's reads would fail with EAGAIN.
 * The status fd tells when the images are on disk and the tree is frozen.
 * Never end a lazy dump by killing CRIU: the tree detaches and runs again at once. finish() ends it cleanly.
 * The agent's death does kill it, which is what the freeze lease wants then: like a plain dump (criu-runner.ts)
 * it runs in its own process group, under PR_SET_PDEATHSIG=SIGKILL, with its stdout and stderr in `<log>.out`.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { resolve } from 'node:path';
import { FerryError, type FerryErrorInit } from '../errors/ferry-error.js';
import { waitTreeStopped } from '../kernel/process-wait.js';
import { formatQuote, readCriuLogErrors } from './criu-log.js';
import { criuOutputFile, readCriuOutputTail } from './criu-log-files.js';
import { spawnCriu, STOP_WAIT_MS } from './criu-runner.js';
import { criuFeatureArgs, NO_CRIU_FEATURES, type CriuFeatures, type NetworkLock } from './criu-features.js';

export interface LazyDumpOptions {
  criu: string;
  pid: number;
  imagesDir: string;
  logFile: string;
  /** Until the images are written; the dump is never killed after that. */
  readyTimeoutMs: number;
  /** Told criu's pid once it runs (the freeze lease waits for it before it thaws). */
  onStarted?: ((pid: number) => void) | undefined;
  /** --file-locks, --tcp-established (with `networkLock`), as a plain dump takes them. */
  features?: CriuFeatures;
  networkLock?: NetworkLock | undefined;
  /** More criu arguments, appended as given (a mount namespace's --external mnt[...]). */
  extraArgs?: readonly string[];
}

export interface LazyDump {
  /** Ends CRIU's session; resolves once it exited 0 and the tree is stopped. Idempotent. */
  finish(): Promise<void>;
}

const init: FerryErrorInit = { phase: 'freeze', side: 'source' };

async function failure(what: string, logFile: string): Promise<FerryError> {
  const lines = await readCriuLogErrors(logFile).catch(() => []);
  const output = lines.length === 0 ? (await readCriuOutputTail(criuOutputFile(logFile))).trim() : '';
  return new FerryError('CRIU_DUMP_FAILED', { ...init, detail: [what, ...formatQuote(lines, logFile), ...(output ? [`criu output: ${output}`] : [])].join('\n') });
}

/** Starts the lazy dump; resolves once every image is written and the tree is frozen. */
export async function startLazyDump(o: LazyDumpOptions): Promise<LazyDump> {
  const logFile = resolve(o.logFile);
  const args = ['dump', '-t', String(o.pid), '-D', resolve(o.imagesDir), '-o', logFile, '-v4', '--leave-stopped', '--lazy-pages', '--ps-socket', '3', '--status-fd', '4', ...criuFeatureArgs(o.features ?? NO_CRIU_FEATURES, o.networkLock), ...(o.extraArgs ?? [])];
  const outputFile = criuOutputFile(logFile);
  let child: ChildProcess;
  try {
    child = spawnCriu(o.criu, args, { outputFile, pipes: 2 });
    if (child.pid !== undefined) o.onStarted?.(child.pid);
  } catch (e) {
    throw new FerryError('CRIU_DUMP_FAILED', { ...init, detail: `cannot run ${o.criu}: ${e instanceof Error ? e.message : String(e)}`, cause: e });
  }
  const ourEnd = child.stdio[3] as Duplex;
  ourEnd.on('error', () => undefined); // CRIU closing its end first is a normal ending
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((ok) => child.once('exit', (code, signal) => ok({ code, signal })));
  const status = child.stdio[4]!;
  let timer: NodeJS.Timeout | undefined;
  const ready = await new Promise<'ready' | 'exited' | 'timeout' | Error>((ok) => {
    timer = setTimeout(() => ok('timeout'), o.readyTimeoutMs);
    status.once('data', () => ok('ready'));
    child.once('error', (e) => ok(e));
    void exited.then(() => ok('exited'));
  });
  clearTimeout(timer);
  if (ready !== 'ready') {
    ourEnd.destroy();
    if (ready === 'timeout') child.kill('SIGKILL'); // before the images were written: the tree was never frozen for long
    const { code } = await exited;
    throw ready instanceof Error
      ? new FerryError('CRIU_DUMP_FAILED', { ...init, detail: `cannot run ${o.criu}: ${ready.message}` })
      : await failure(ready === 'timeout' ? `criu dump --lazy-pages was not ready in ${o.readyTimeoutMs} ms` : `criu dump --lazy-pages exited with ${code}`, logFile);
  }
  let finished: Promise<void> | undefined;
  return {
    finish: () =>
      (finished ??= (async () => {
        ourEnd.end();
        const { code, signal } = await exited;
        status.destroy();
        if (code !== 0) throw await failure(`criu dump --lazy-pages ended with ${code ?? signal}`, logFile);
        await rm(outputFile, { force: true });
        const running = await waitTreeStopped(o.pid, STOP_WAIT_MS);
        if (running.length > 0) {
          throw new FerryError('CRIU_DUMP_FAILED', { ...init, detail: `tasks ${running.join(', ')} did not stop after the lazy dump; log: ${logFile}` });
        }
      })()),
  };
}

const support = new Map<string, Promise<boolean>>();

/** Whether this CRIU and kernel can do lazy dumps (userfaultfd with non-cooperative events); asked once. */
export function lazyDumpSupported(criu: string): Promise<boolean> {
  let p = support.get(criu);
  if (!p) {
    p = new Promise((ok) => execFile(criu, ['check', '--feature', 'uffd-noncoop'], { timeout: 15_000 }, (err) => ok(!err)));
    support.set(criu, p);
  }
  return p;
}
