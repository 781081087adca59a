/**
 * One TCP connection across the link between the two hosts, each end a small node process in its host (the
 * test process lives outside the namespaces), both driven from the test: a line written at one end shows up at
 * the other. It shows what a cut does to a live connection: nothing gets through either way while it lasts,
 * and after the heal the same connection (same ports, never reconnected) delivers what was sent meanwhile.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Host, TwoHosts } from './netns-hosts.js';
import { waitFor } from './wait-for.js';

// CommonJS (node -e). argv: listen ADDRESS | connect ADDRESS PORT. Status and received lines go to stdout as
// JSON; each stdin line is written to the socket. Nothing reconnects: an error or a close is reported and ends it.
const END_SCRIPT = `
const net = require('node:net');
const [role, address, port] = process.argv.slice(1);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const serve = (sock) => {
  sock.setNoDelay(true);
  say({ connected: { local: sock.localPort, remote: sock.remotePort } });
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\\n')) >= 0) { say({ line: buf.slice(0, nl) }); buf = buf.slice(nl + 1); }
  });
  sock.on('error', (e) => { say({ error: e.code || e.message }); process.exit(1); });
  sock.on('close', () => { say({ closed: true }); process.exit(0); });
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => sock.write(d));
};
if (role === 'listen') {
  const server = net.createServer((sock) => { server.close(); serve(sock); });
  server.listen(0, address, () => say({ port: server.address().port }));
} else {
  const sock = net.connect({ host: address, port: Number(port) }, () => serve(sock));
  sock.on('error', (e) => { say({ error: e.code || e.message }); process.exit(1); });
}
`;

interface Status {
  port?: number;
  connected?: { local: number; remote: number };
  line?: string;
  error?: string;
  closed?: boolean;
}

export interface ProbeEnd {
  readonly host: Host;
  /** The local port of this end's socket. */
  readonly port: number;
  /** Writes one line (no newline in it) to the connection. */
  send(line: string): void;
  /** Lines received so far, in order. */
  received(): readonly string[];
  /** Resolves once `line` has been received; rejects after timeoutMs or if the connection ended. */
  waitForLine(line: string, timeoutMs: number): Promise<void>;
}

export interface LinkProbe {
  /** The end that connected (in `from`). */
  readonly connector: ProbeEnd;
  /** The end that listened (in `to`). */
  readonly listener: ProbeEnd;
  /** Whether both ends still hold the connection (no error, no close seen). */
  connected(): boolean;
  /** Kills both ends and waits until they are gone. Idempotent. */
  close(): Promise<void>;
}

interface EndProcess {
  child: ChildProcess;
  statuses: Status[];
  exited: Promise<void>;
  ended: () => boolean;
}

function startEnd(host: Host, args: string[]): EndProcess {
  const child = spawn('nsenter', [`--net=${host.netns}`, process.execPath, '-e', END_SCRIPT, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const statuses: Status[] = [];
  let partial = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      statuses.push(JSON.parse(partial.slice(0, nl)) as Status);
      partial = partial.slice(nl + 1);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (stderr += c));
  // A write to an end that already exited is not the test's error; the status lines say what happened.
  child.stdin.on('error', () => undefined);
  let done = false;
  const exited = new Promise<void>((resolve) => {
    child.once('close', (code, sig) => {
      done = true;
      if (code !== 0 && sig === null) statuses.push({ error: `exit ${code}: ${stderr.trim()}` });
      resolve();
    });
  });
  return { child, statuses, exited, ended: () => done };
}

function endOf(host: Host, p: EndProcess, port: number): ProbeEnd {
  const received = (): string[] => p.statuses.flatMap((s) => (s.line !== undefined ? [s.line] : []));
  const broken = (): Status | undefined => p.statuses.find((s) => s.error !== undefined || s.closed);
  return {
    host,
    port,
    send: (line) => {
      if (line.includes('\n')) throw new Error('a probe line holds no newline');
      p.child.stdin!.write(`${line}\n`);
    },
    received,
    waitForLine: async (line, timeoutMs) => {
      await waitFor(
        () => {
          if (received().includes(line)) return true;
          const b = broken();
          if (b) throw new Error(`the connection at ${host.name} ended before "${line}" arrived: ${JSON.stringify(b)}`);
          return false;
        },
        timeoutMs,
        `"${line}" to arrive at ${host.name}`,
      );
    },
  };
}

/** Opens one TCP connection from `from` (default the src host) to a listener in the other host. */
export async function startLinkProbe(hosts: TwoHosts, from: Host = hosts.src, timeoutMs = 10_000): Promise<LinkProbe> {
  const to = hosts.peerOf(from);
  const ends: EndProcess[] = [];
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const e of ends) if (!e.ended()) e.child.kill('SIGKILL');
      await Promise.all(ends.map((e) => e.exited));
    })();
    return closing;
  };
  const statusOf = <K extends keyof Status>(e: EndProcess, key: K, what: string): Promise<NonNullable<Status[K]>> =>
    waitFor(
      () => {
        const s = e.statuses.find((x) => x[key] !== undefined);
        if (s) return s[key] as NonNullable<Status[K]>;
        const bad = e.statuses.find((x) => x.error !== undefined);
        if (bad || e.ended()) throw new Error(`the link probe failed before ${what}: ${JSON.stringify(bad ?? 'exited')}`);
        return undefined;
      },
      timeoutMs,
      what,
    );
  try {
    const listener = startEnd(to, ['listen', to.address]);
    ends.push(listener);
    const port = await statusOf(listener, 'port', `the probe listener in ${to.name}`);
    const connector = startEnd(from, ['connect', to.address, String(port)]);
    ends.push(connector);
    const c = await statusOf(connector, 'connected', `the probe connection from ${from.name}`);
    const l = await statusOf(listener, 'connected', `the probe connection at ${to.name}`);
    if (l.remote !== c.local) throw new Error(`the listener accepted port ${l.remote}, not the connector's ${c.local}`);
    const broken = (e: EndProcess): boolean => e.ended() || e.statuses.some((s) => s.error !== undefined || s.closed);
    return {
      connector: endOf(from, connector, c.local),
      listener: endOf(to, listener, l.local),
      connected: () => !broken(connector) && !broken(listener),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
