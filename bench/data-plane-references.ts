/**
 * The references Ferry's page stream is judged against, measured over the same veth in the same run: iperf3
 * (one stream and -P 2: the kernel's own ceiling here) and one Node stream between two Node processes in 1 MiB
 * writes (stream-probe.ts), over mutual TLS with the hosts' certificates (the transport's ceiling) and over
 * plain TCP.
 */
import { existsSync } from 'node:fs';
import type { TwoHosts } from '../testbed/two-hosts.js';
import { runCommand, startCommand, tailLines, type CommandOptions } from './proc.js';

export interface ReferenceResult {
  id: string;
  label: string;
  /** MiB/s (2^20 bytes per second) at the receiver. */
  mibPerSec: number;
  gbitPerSec: number;
  bytes: number;
  /** Measured before or after the link's Ferry cells (the raw veth's are measured both times). */
  when?: 'before' | 'after' | undefined;
  /** CPU seconds per GiB of the sender and of the receiver (Node streams only). */
  senderCpuSecPerGiB?: number | undefined;
  receiverCpuSecPerGiB?: number | undefined;
}

export interface ReferenceSkip {
  id: string;
  label: string;
  skipped: string;
}

const IPERF3 = '/usr/bin/iperf3';
const IPERF_PORT = 5201;

const toResult = (id: string, label: string, bytes: number, seconds: number, cpu?: { sender: number; receiver: number }): ReferenceResult => ({
  id,
  label,
  bytes,
  mibPerSec: bytes / 2 ** 20 / seconds,
  gbitPerSec: (bytes * 8) / seconds / 1e9,
  senderCpuSecPerGiB: cpu ? cpu.sender / (bytes / 2 ** 30) : undefined,
  receiverCpuSecPerGiB: cpu ? cpu.receiver / (bytes / 2 ** 30) : undefined,
});

/** Waits, bounded, until `text()` matches: a server's "listening" line. */
async function waitForText(text: () => string, pattern: RegExp, exited: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (pattern.test(text())) return true;
    if (exited()) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

const runClient = (hosts: TwoHosts, streams: number, seconds: number, opts: CommandOptions) =>
  runCommand([...hosts.enter(hosts.src), IPERF3, '-c', hosts.dst.address, '-p', String(IPERF_PORT), '-t', String(seconds), '-P', String(streams), '-J'], opts);

/** `iperf3 -c` from the src host to a one-off server in the dst host for `seconds`, with `streams` parallel streams. */
export async function iperf3(hosts: TwoHosts, streams: number, seconds: number, signal: AbortSignal): Promise<ReferenceResult | ReferenceSkip> {
  const id = streams === 1 ? 'iperf3' : `iperf3-P${streams}`;
  const label = streams === 1 ? 'iperf3, one stream' : `iperf3 -P ${streams}`;
  if (!existsSync(IPERF3)) return { id, label, skipped: `${IPERF3} is not installed (apt-get install iperf3)` };
  const opts: CommandOptions = { signal, timeoutMs: (seconds + 20) * 1000 };
  const server = startCommand([...hosts.enter(hosts.dst), IPERF3, '-s', '-1', '-B', hosts.dst.address, '-p', String(IPERF_PORT)], opts);
  try {
    // The server's "listening" line is not seen here (stdout comes at its exit): retry a refused connect, bounded.
    let r = await runClient(hosts, streams, seconds, opts);
    for (let i = 0; i < 20 && r.code !== 0 && /refused|unable to connect/i.test(r.stdout + r.stderr); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      r = await runClient(hosts, streams, seconds, opts);
    }
    signal.throwIfAborted();
    if (r.code !== 0) throw new Error(`iperf3 -c exited ${r.code}: ${tailLines(r.stdout || r.stderr, 5)}`);
    const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bytes?: number; seconds?: number } } };
    const got = j.end?.sum_received;
    if (!got?.bytes || !got.seconds) throw new Error(`iperf3 reported no received sum: ${tailLines(r.stdout, 5)}`);
    return toResult(id, label, got.bytes, got.seconds);
  } finally {
    server.kill();
    await server.done;
  }
}

/** One Node stream of `bytes` src -> dst in 1 MiB writes, over mutual TLS (`tls`) or plain TCP. */
export async function nodeStream(hosts: TwoHosts, probe: string, bytes: number, tls: boolean, signal: AbortSignal): Promise<ReferenceResult> {
  const id = tls ? 'node-tls' : 'node-tcp';
  const label = tls ? 'Node TLS stream, 1 MiB writes' : 'Node TCP stream, 1 MiB writes';
  const opts: CommandOptions = { signal, timeoutMs: 120_000 };
  let stderr = '';
  const receiver = startCommand([...hosts.enter(hosts.dst), process.execPath, probe, 'recv', hosts.dst.address, ...(tls ? [hosts.dst.tlsDir] : [])], {
    ...opts,
    onStderr: (c) => (stderr += c),
  });
  let exited = false;
  void receiver.done.then(() => (exited = true));
  try {
    if (!(await waitForText(() => stderr, /\{"port":\d+\}/, () => exited, 10_000))) {
      throw new Error(`the stream receiver did not listen: ${tailLines(stderr, 5)}`);
    }
    const port = Number(/\{"port":(\d+)\}/.exec(stderr)![1]);
    const sent = await runCommand([...hosts.enter(hosts.src), process.execPath, probe, 'send', hosts.dst.address, String(port), String(bytes), ...(tls ? [hosts.src.tlsDir] : [])], opts);
    const got = await receiver.done;
    signal.throwIfAborted();
    if (sent.code !== 0 || got.code !== 0) throw new Error(`${label}: sender ${sent.code} (${tailLines(sent.stderr, 3)}), receiver ${got.code} (${tailLines(got.stderr, 3)})`);
    const s = JSON.parse(sent.stdout) as { cpuUs: number };
    const g = JSON.parse(got.stdout) as { bytes: number; ms: number; cpuUs: number };
    if (g.bytes !== bytes || g.ms <= 0) throw new Error(`${label}: the receiver got ${g.bytes} of ${bytes} bytes in ${g.ms} ms`);
    return toResult(id, label, g.bytes, g.ms / 1000, { sender: s.cpuUs / 1e6, receiver: g.cpuUs / 1e6 });
  } finally {
    receiver.kill();
    await receiver.done;
  }
}
