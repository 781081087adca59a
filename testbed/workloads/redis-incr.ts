/**
 * Redis as a task that moves with its network namespace: `redis-server` with nothing on disk, and a client that
 * holds one connection and INCRs one key every 10 ms (raw RESP, no library), counting the acknowledged INCRs
 * and checking each answer is the count so far (none lost, none applied twice). After the move, GET over a new
 * connection must equal the acknowledged count.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inNetns, startLineClient, type EchoClient } from './line-client.js';

/** redis-server in the foreground on 0.0.0.0:port, no persistence, no protected mode (the segment is ours). */
export function redisServerArgv(port: number): string[] {
  return ['redis-server', '--port', String(port), '--bind', '0.0.0.0', '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--daemonize', 'no'];
}

const INCR_CLIENT = `
import json, os, socket, sys, time
host, port, every, stop, summary = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.create_connection((host, port), timeout=5); s.settimeout(30)
local = s.getsockname()[1]
acked = 0; wrong = 0; gap = 0.0; err = None; f = s.makefile('rb'); long = []
s.sendall(b'DEL ferry-incr\\r\\n'); f.readline()
open(summary + '.ready', 'w').write(str(local))
last = time.monotonic()
while not os.path.exists(stop):
    try:
        s.sendall(b'INCR ferry-incr\\r\\n'); line = f.readline()
    except OSError as e:
        err = repr(e); break
    if not line.startswith(b':'): err = repr(line); break
    acked += 1; t = time.monotonic(); gap = max(gap, t - last); long += [[round((t - last) * 1000), round(time.time() * 1000)]] if t - last > 0.1 else []; last = t
    if int(line[1:]) != acked: wrong += 1
    time.sleep(every)
out = dict(localPort=local, sent=acked, answered=acked, lost=wrong, duplicated=0, maxGapMs=round(gap * 1000), longGaps=long[-64:], error=err)
open(summary + '.tmp', 'w').write(json.dumps(out)); os.rename(summary + '.tmp', summary)
`;

/** The INCR client in `netns` against host:port; its summary's `answered` is the acknowledged INCRs, `lost` the wrong answers. */
export function startIncrClient(dir: string, netns: string, host: string, port: number, everyMs = 10): Promise<EchoClient> {
  return startLineClient(INCR_CLIENT, join(dir, 'incr-client'), netns, host, port, everyMs);
}

/** GET of the client's key over a new connection, from `netns`. */
export function redisGet(netns: string, host: string, port: number): number {
  const py = `import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\ns.sendall(b'GET ferry-incr\\r\\n')\nf=s.makefile('rb');f.readline();print(f.readline().decode().strip())`;
  const [cmd, args] = inNetns(netns, ['python3', '-c', py, host, String(port)]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 15_000 });
  return Number(r.stdout.trim());
}
