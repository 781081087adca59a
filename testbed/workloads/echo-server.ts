/**
 * The echo workload of a task that moves with its network namespace: a python server that echoes TCP (every
 * connection) and UDP on one port, and a client (line-client.ts) that holds one TCP connection and sends a
 * numbered line every 10 ms, checking each answer: in order, none lost, none duplicated. Its summary names the
 * longest gap between two answers: what a peer of the migrated server sees of the downtime.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inNetns, startLineClient, type EchoClient } from './line-client.js';

/**
 * `python3 -c ECHO_SERVER PORT [::]`: TCP and UDP echo on 0.0.0.0:PORT (with `::`, on both families: a dual-stack
 * task); single-threaded (selectors). It also holds a
 * TCP connection to itself over loopback (both ends in the task: established TCP inside the tree): a client
 * that sends exactly `loop\n` gets `loop ` + what went once around that connection (`ok`).
 */
export const ECHO_SERVER = `
import selectors, socket, sys
port = int(sys.argv[1]); bind = sys.argv[2] if len(sys.argv) > 2 else '0.0.0.0'
fam = socket.AF_INET6 if ':' in bind else socket.AF_INET
def sock(kind):
    s = socket.socket(fam, kind)
    if fam == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s
sel = selectors.DefaultSelector()
ls = sock(socket.SOCK_STREAM); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind((bind, port)); ls.listen(16)
us = sock(socket.SOCK_DGRAM); us.bind((bind, port))
lc = socket.create_connection(('::1' if fam == socket.AF_INET6 else '127.0.0.1', port)); waiting = []
sel.register(ls, selectors.EVENT_READ); sel.register(us, selectors.EVENT_READ); sel.register(lc, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            c, _ = ls.accept(); sel.register(c, selectors.EVENT_READ)
        elif s is us:
            d, peer = us.recvfrom(2048); us.sendto(d, peer)
        elif s is lc:
            d = lc.recv(65536)
            if waiting: waiting.pop(0).sendall(b'loop ' + d)
        else:
            try:
                d = s.recv(65536)
                if d == b'loop\\n':
                    waiting.append(s); lc.sendall(b'ok\\n'); continue
                if d:
                    s.sendall(d); continue
            except OSError:
                pass
            sel.unregister(s); s.close()
`;

const ECHO_CLIENT = `
import json, os, socket, sys, time
host, port, every, stop, summary = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.create_connection((host, port), timeout=5); s.settimeout(every)
local = s.getsockname()[1]
sent = 0; expect = 1; lost = 0; dup = 0; got = 0; buf = b''; err = None
last = time.monotonic(); gap = 0.0; nxt = time.monotonic(); stopping = None; long = []
open(summary + '.ready', 'w').write(str(local))
while True:
    now = time.monotonic()
    if stopping is None and os.path.exists(stop): stopping = now
    if stopping is not None and (got >= sent or now - stopping > 10): break
    if stopping is None and now >= nxt:
        sent += 1; nxt += every
        try: s.sendall(b'%d\\n' % sent)
        except OSError as e: err = repr(e); break
    try:
        d = s.recv(65536)
        if not d: err = 'eof'; break
        buf += d
    except socket.timeout:
        continue
    except OSError as e:
        err = repr(e); break
    while b'\\n' in buf:
        line, buf = buf.split(b'\\n', 1); n = int(line); t = time.monotonic()
        gap = max(gap, t - last); long += [[round((t - last) * 1000), round(time.time() * 1000)]] if t - last > 0.1 else []; last = t; got += 1
        if n < expect: dup += 1
        else: lost += n - expect; expect = n + 1
out = dict(localPort=local, sent=sent, answered=got, lost=lost + sent - (expect - 1), duplicated=dup, maxGapMs=round(gap * 1000), longGaps=long[-64:], error=err)
open(summary + '.tmp', 'w').write(json.dumps(out)); os.rename(summary + '.tmp', summary)
`;


export type { EchoClient, EchoSummary } from './line-client.js';

/** Starts the client in `netns` against host:port, sending every `everyMs`; resolves once it is connected. */
export function startEchoClient(dir: string, netns: string, host: string, port: number, everyMs = 10): Promise<EchoClient> {
  return startLineClient(ECHO_CLIENT, join(dir, 'echo-client'), netns, host, port, everyMs);
}

/** One UDP datagram to host:port from `netns`; whether the same bytes came back within `timeoutMs`. */
export function udpEchoes(netns: string, host: string, port: number, timeoutMs = 2_000): boolean {
  const py = `import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(${timeoutMs / 1000})\nfor i in range(3):\n    s.sendto(b'ferry-udp',(sys.argv[1],int(sys.argv[2])))\n    try:\n        print(s.recvfrom(64)[0].decode()); break\n    except socket.timeout: pass`;
  const [cmd, args] = inNetns(netns, ['python3', '-c', py, host, String(port)]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs * 3 + 5_000 });
  return r.stdout.trim() === 'ferry-udp';
}

/** A new TCP connection to host:port from `netns`: `line` sent, the first line answered (trimmed; '' for none). */
function askOnce(netns: string, host: string, port: number, line: string, timeoutMs: number): string {
  const py = `import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=${timeoutMs / 1000})\ns.sendall(sys.argv[3].encode()+b'\\n');print(s.makefile('rb').readline().decode().strip())`;
  const [cmd, args] = inNetns(netns, ['python3', '-c', py, host, String(port), line]);
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs + 5_000 }).stdout.trim();
}

/** The listening socket: a new connection, one line echoed over it. */
export const tcpEchoesOnNewConnection = (netns: string, host: string, port: number, timeoutMs = 3_000): boolean => askOnce(netns, host, port, 'ferry-tcp', timeoutMs) === 'ferry-tcp';

/** The server's loopback connection inside the task, asked once around from `netns`: whether it answered. */
export const loopbackInsideAnswers = (netns: string, host: string, port: number, timeoutMs = 3_000): boolean => askOnce(netns, host, port, 'loop', timeoutMs) === 'loop ok';
