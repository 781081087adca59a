/**
 * A client of a migrating server, as a python program run in a namespace of the segment: it holds one TCP
 * connection, sends a numbered request every few ms until told to stop (a file appears), checks each answer,
 * and writes one JSON summary (echo-server.ts and redis-incr.ts give the program). Its readiness file holds the
 * connection's local port: the same connection before and after the move is the same local port, never a
 * reconnect (the programs never reconnect: any error ends them, and the summary says which).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { waitFor } from '../wait-for.js';

export interface EchoSummary {
  localPort: number;
  sent: number;
  answered: number;
  lost: number;
  duplicated: number;
  maxGapMs: number;
  /** Each gap over 100 ms between two answers: [its length in ms, the wall-clock ms of the answer that ended it]. */
  longGaps: [number, number][];
  error: string | null;
}

export interface EchoClient {
  /** The connection's local port, as it was when it connected. */
  localPort: number;
  /** Stops sending, waits (bounded) for the answers still out and returns the summary. */
  finish(): Promise<EchoSummary>;
  kill(): void;
}

/** `nsenter --net=NETNS`: a command in the network namespace an nsfs path names. */
export function inNetns(netns: string, argv: readonly string[]): [string, string[]] {
  return ['nsenter', [`--net=${netns}`, ...argv]];
}

/** Runs `program HOST PORT EVERY STOP SUMMARY` in `netns`; resolves once it is connected. Files at `base`.*. */
export async function startLineClient(program: string, base: string, netns: string, host: string, port: number, everyMs: number): Promise<EchoClient> {
  const stop = `${base}.stop`;
  const summary = `${base}.json`;
  for (const f of [stop, summary, `${summary}.ready`]) rmSync(f, { force: true });
  const [cmd, args] = inNetns(netns, ['python3', '-u', '-c', program, host, String(port), String(everyMs / 1000), stop, summary]);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = (): void => void child.kill('SIGKILL');
  try {
    await waitFor(() => existsSync(`${summary}.ready`) || child.exitCode !== null, 10_000, 'the client to connect');
    if (!existsSync(`${summary}.ready`)) throw new Error(`the client did not connect: ${stderr.trim()}`);
  } catch (e) {
    kill();
    throw e;
  }
  return {
    localPort: Number(readFileSync(`${summary}.ready`, 'utf8')),
    kill,
    finish: async () => {
      writeFileSync(stop, '');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
      if (!existsSync(summary)) {
        kill();
        throw new Error(`the client wrote no summary: ${stderr.trim()}`);
      }
      return JSON.parse(readFileSync(summary, 'utf8')) as EchoSummary;
    },
  };
}

/** Waits (bounded) until host:port accepts a TCP connection from `netns`: the server listens. */
export async function waitListening(netns: string, host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const py = 'import socket,sys\nsocket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1).close()';
  const [cmd, args] = inNetns(netns, ['python3', '-c', py, host, String(port)]);
  await waitFor(() => spawnSync(cmd, args, { timeout: 5_000 }).status === 0, timeoutMs, `${host}:${port} to listen`);
}
