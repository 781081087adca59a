/**
 * The source agent's Unix socket on the real kernel: its owner and mode, a dead socket replaced and a live
 * one refused, nothing removed that is not a socket, the directory's safety, and the caller's credentials
 * as each connection's handlers see them.
 */
import * as grpc from '@grpc/grpc-js';
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PeerCredentials } from '../../shared/kernel/peer-credentials.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { silentLogger } from '../../shared/logging/logger.js';
import { CHANNEL_OPTIONS, ferryProto } from '../../shared/transport/proto.js';
import { startUnixSocketServer } from '../../shared/transport/unix-socket-server.js';
import { startSourceAgent, type SourceAgent } from '../../source-agent/source-agent.js';
import { canRun, isRoot } from '../../testbed/requirements.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

let dir = '';
const agents: SourceAgent[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ferry-sock-'));
});
afterEach(async () => {
  for (const a of agents.splice(0)) await a.close();
  rmSync(dir, { recursive: true, force: true });
});

async function agentAt(socket: string, socketGid?: number): Promise<SourceAgent> {
  const a = await startSourceAgent({ socket, socketGid, allowDests: [], dialSecurity: INSECURE_LOOPBACK, journalDir: join(dir, 'journal'), log: silentLogger });
  agents.push(a);
  return a;
}

/** Check over the socket; resolves with the status code (0 = answered). */
function check(socket: string): Promise<number> {
  const Source = ferryProto().Source;
  const client = new Source(`unix:${socket}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise((done) => {
    (client as unknown as { Check: (r: object, o: object, cb: (e: grpc.ServiceError | null) => void) => void }).Check({}, { deadline: Date.now() + 10_000 }, (e) => {
      client.close();
      done(e ? e.code : 0);
    });
  });
}

describe.skipIf(!canRun('source agent socket', isRoot()))('source agent socket', () => {
  it('is mode 0600 owned by root, or 0660 owned by the --socket-group; the directory is made 0755', async () => {
    const a = await agentAt(join(dir, 'run', 'a.sock'));
    expect(statSync(join(dir, 'run')).mode & 0o7777).toBe(0o755);
    const st = lstatSync(a.socket);
    expect(st.isSocket()).toBe(true);
    expect({ mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }).toEqual({ mode: 0o600, uid: 0, gid: 0 });
    const b = await agentAt(join(dir, 'b.sock'), 65534);
    const sb = lstatSync(b.socket);
    expect({ mode: sb.mode & 0o7777, uid: sb.uid, gid: sb.gid }).toEqual({ mode: 0o660, uid: 0, gid: 65534 });
    expect(await check(b.socket)).toBe(0);
    // No staging directory is left behind.
    expect(readdir(dir)).toEqual(['b.sock', 'run']);
  });

  it('replaces the socket of a dead agent', async () => {
    const path = join(dir, 's.sock');
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(join(dir, 'tmp.sock'), r));
    linkSync(join(dir, 'tmp.sock'), path); // a socket file nobody listens on once `dead` closes
    await new Promise<void>((r) => dead.close(() => r()));
    expect(lstatSync(path).isSocket()).toBe(true);
    const a = await agentAt(path);
    expect(await check(a.socket)).toBe(0);
  });

  it('refuses to start beside a live agent, which keeps its socket', async () => {
    const path = join(dir, 's.sock');
    const a = await agentAt(path);
    const ino = lstatSync(path).ino;
    await expectFerryRejection(agentAt(path), 'SOURCE_SOCKET_IN_USE');
    expect(lstatSync(path).ino).toBe(ino);
    expect(await check(a.socket)).toBe(0);
  });

  it('never removes a file that is not a socket', async () => {
    const path = join(dir, 'data');
    writeFileSync(path, 'precious');
    await expectFerryRejection(agentAt(path), 'SOURCE_SOCKET_UNSAFE');
    expect(readFileSync(path, 'utf8')).toBe('precious');
    mkdirSync(join(dir, 'sub'));
    await expectFerryRejection(agentAt(join(dir, 'sub')), 'SOURCE_SOCKET_UNSAFE');
    expect(statSync(join(dir, 'sub')).isDirectory()).toBe(true);
  });

  it('refuses a directory that others may write (they could swap the socket)', async () => {
    const open = join(dir, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    await expectFerryRejection(agentAt(join(open, 's.sock')), 'SOURCE_SOCKET_UNSAFE');
    expect(readdir(open)).toEqual([]);
  });

  it('refuses a path longer than a socket address holds', async () => {
    await expectFerryRejection(agentAt(join(dir, 'x'.repeat(120))), 'BAD_ARGUMENT');
  });

  it('removes its socket when it stops', async () => {
    const a = await agentAt(join(dir, 's.sock'));
    await agents.pop()!.close();
    expect(existsSync(a.socket)).toBe(false);
  });

  it("gives each connection's handlers the kernel's record of the caller", async () => {
    const seen: PeerCredentials[] = [];
    const server = await startUnixSocketServer({
      path: join(dir, 'c.sock'),
      service: ferryProto().Source.service,
      handlersFor: (caller) => {
        seen.push(caller);
        return {
          Check: (_call: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { protocolVersion: caller.uid + 1 }),
          Migrate: () => undefined,
        };
      },
      log: silentLogger,
    });
    try {
      expect(await check(server.path)).toBe(0);
      expect(await check(server.path)).toBe(0);
      expect(seen).toHaveLength(2); // one set of handlers per connection
      // Supplementary groups as the kernel lists them (process.getgroups() adds the egid).
      const groups = /^Groups:[ \t]*([^\n]*)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!.trim();
      expect(seen[0]).toEqual({ pid: process.pid, uid: 0, gid: process.getgid!(), groups: groups === '' ? [] : groups.split(/\s+/).map(Number) });
    } finally {
      server.close();
    }
  });
});

function readdir(d: string): string[] {
  return readdirSync(d).sort();
}
