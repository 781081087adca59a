/**
 * The link between the two hosts: shaping it (tbf on the src's egress, the direction pages flow; the reverse
 * direction only carries acknowledgements) and a byte pipe across it (tcp-pipe.js, entered with nsenter), used
 * by the plain-CRIU copy and by a short throughput check of each shaping.
 */
import type { TwoHosts } from '../testbed/two-hosts.js';
import type { Link, LinkId } from './cases.js';
import { runChecked, runCommand, startCommand, tailLines, type CommandOptions } from './proc.js';
import type { LinkCheck } from './results.js';

/** Sets the src's egress qdisc for this link: tbf through two-hosts' shape(), or none for the raw veth. */
export async function shapeLink(hosts: TwoHosts, link: Link, signal: AbortSignal): Promise<void> {
  if (link.tbfRate !== undefined) {
    await hosts.shape(link.tbfRate);
    return;
  }
  // two-hosts has no unshape: delete the root qdisc ourselves ("no qdisc" when there is none is fine).
  const r = await runCommand(['nsenter', `--net=${hosts.src.netns}`, 'tc', 'qdisc', 'del', 'dev', hosts.src.link, 'root'], { signal, timeoutMs: 10_000 });
  signal.throwIfAborted();
  if (r.code !== 0 && !/No such file|Cannot delete qdisc with handle of zero|Cannot find/i.test(r.stderr)) {
    throw new Error(`tc qdisc del on ${hosts.src.link} failed: ${r.stderr.trim()}`);
  }
}

/** The qdisc on the src's veth, as `tc qdisc show` prints it (for the log). */
export async function describeQdisc(hosts: TwoHosts, signal: AbortSignal): Promise<string> {
  const r = await runChecked(['nsenter', `--net=${hosts.src.netns}`, 'tc', 'qdisc', 'show', 'dev', hosts.src.link], 'tc qdisc show', { signal, timeoutMs: 10_000 });
  return r.stdout.trim().split('\n')[0] ?? '';
}

/** A receiver waiting in `netns`: `tcp-pipe recv ADDRESS | tar -x` (or into /dev/null when dir is undefined). */
export async function startReceiver(
  tcpPipe: string,
  netns: string,
  address: string,
  dir: string | undefined,
  opts: CommandOptions,
): Promise<{ port: number; kill: () => void; done: Promise<{ bytes: number; ms: number; code: number | null; stderr: string }> }> {
  const sink = dir === undefined ? 'cat >/dev/null' : 'tar -C "$5" -xf -';
  let buffered = '';
  let gotPort: (port: number | undefined) => void = () => undefined;
  const portKnown = new Promise<number | undefined>((resolve) => (gotPort = resolve));
  const cmd = startCommand(['bash', '-c', `set -o pipefail; nsenter --net="$1" "$2" "$3" recv "$4" | ${sink}`, 'bash', netns, process.execPath, tcpPipe, address, dir ?? ''], {
    ...opts,
    onStderr: (chunk) => {
      buffered += chunk;
      const m = /\{"port":(\d+)\}/.exec(buffered);
      if (m) gotPort(Number(m[1]));
    },
  });
  const done = cmd.done.then((r) => {
    const m = /\{"bytes":(\d+),"ms":([\d.]+)\}/.exec(r.stderr);
    return { bytes: m ? Number(m[1]) : 0, ms: m ? Number(m[2]) : 0, code: r.code, stderr: r.stderr };
  });
  // An exit before the port line settles it with undefined (a later resolve is a no-op); `done` never rejects.
  void done.then(() => gotPort(undefined));
  const port = await portKnown;
  if (port === undefined) {
    const r = await done;
    throw new Error(`the receiver exited (${r.code}) before listening: ${tailLines(r.stderr, 5)}`);
  }
  return { port, kill: () => cmd.kill(), done };
}

/** `tar -C dir -cf - . | tcp-pipe send` (or `head -c bytes /dev/zero | ...`) from `netns`. */
export function runSender(tcpPipe: string, netns: string, address: string, port: number, source: { dir: string } | { zeroBytes: number }, opts: CommandOptions) {
  const producer = 'dir' in source ? 'tar -C "$5" -cf - .' : 'head -c "$5" /dev/zero';
  const arg = 'dir' in source ? source.dir : String(source.zeroBytes);
  return runCommand(['bash', '-c', `set -o pipefail; ${producer} | nsenter --net="$1" "$2" "$3" send "$4" "$6"`, 'bash', netns, process.execPath, tcpPipe, address, arg, String(port)], opts);
}

const CHECK_BYTES: Record<LinkId, number> = { '1gbit': 100e6, '100mbit': 12e6, unshaped: 400e6 };

/** One TCP stream of zeros src -> dst; the rate from the receiver's first byte to its last. */
export async function checkLink(hosts: TwoHosts, link: Link, tcpPipe: string, signal: AbortSignal): Promise<LinkCheck> {
  const opts: CommandOptions = { signal, timeoutMs: 60_000 };
  const receiver = await startReceiver(tcpPipe, hosts.dst.netns, hosts.dst.address, undefined, opts);
  const sent = await runSender(tcpPipe, hosts.src.netns, hosts.dst.address, receiver.port, { zeroBytes: CHECK_BYTES[link.id] }, opts);
  if (sent.code !== 0) receiver.kill();
  const got = await receiver.done;
  signal.throwIfAborted();
  if (sent.code !== 0 || got.code !== 0 || got.ms <= 0) {
    throw new Error(`link check on ${link.label} failed: sender ${sent.code} (${tailLines(sent.stderr, 3)}), receiver ${got.code} (${tailLines(got.stderr, 3)})`);
  }
  return { link: link.id, bytes: got.bytes, ms: got.ms, mbitPerSec: (got.bytes * 8) / (got.ms * 1000) };
}
