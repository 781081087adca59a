/**
 * The dest's side of a task network's copy against the real kernel (review 16): a copy that criu restored
 * without a whole hold (none, or an opened one) is refused (TASK_NETWORK_NOT_HELD_ON_DEST) and a held one passes;
 * an abort of a session that never got a copy leaves alone a link of its outer veth's name (another session's).
 */
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { checkCopyHeld } from '../../dest-agent/task-network-copy.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { addNetworkHold, openNetworkHold, releaseNetworkHold } from '../../shared/kernel/nft-hold.js';
import { startNetnsSleeper } from '../../testbed/workloads/netns-sleeper.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';
import { chunk, EPOCH, prepareRequest, startDest, upload } from '../support/dest-grpc.js';

const runnable = canRun('dest task-network copy', isRoot(), hasCommand('ip'), hasCommand('nsenter'));
const NET = { innerLink: 'eth0', mac: '02:79:0a:00:00:66', addresses: ['10.79.10.102/24'] };

const codeOf = (f: () => void): string | undefined => {
  try {
    f();
  } catch (e) {
    return e instanceof FerryError ? e.code : String(e);
  }
  return undefined;
};

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}
const linkExists = (name: string): boolean => spawnSync('ip', ['link', 'show', 'dev', name], { timeout: 10_000 }).status === 0;

describe.skipIf(!runnable)("the dest's task network copy (real kernel)", () => {
  it('refuses a restored copy that is not held whole: no hold, or an opened one; a held one passes', async () => {
    const sleeper = await startNetnsSleeper(`ferry-it-copy-held-${process.pid}`, NET.addresses[0]!);
    cleanups.push(() => sleeper.stop());
    const net = { ...NET, outerLink: 'fyheld0', bridge: 'ferry0' };
    const notHeld = new FerryError('TASK_NETWORK_NOT_HELD_ON_DEST').code;
    expect(codeOf(() => checkCopyHeld(sleeper.pid, net))).toBe(notHeld);
    addNetworkHold(sleeper.netns);
    expect(codeOf(() => checkCopyHeld(sleeper.pid, net))).toBeUndefined();
    openNetworkHold(sleeper.netns);
    expect(codeOf(() => checkCopyHeld(sleeper.pid, net))).toBe(notHeld);
    releaseNetworkHold(sleeper.netns);
  }, 30_000);

  it("an abort of a session whose restore failed before criu made a copy deletes no link of the copy's outer name", async () => {
    // Names of this test's own in this host's namespace (the dest agent's): a bridge, and the "other session's" link.
    const tag = process.pid.toString(16).slice(-6).padStart(6, '0');
    const bridge = `fyb${tag}`;
    const outer = `fyo${tag}`;
    ip(['link', 'add', bridge, 'type', 'bridge']);
    cleanups.push(() => void spawnSync('ip', ['link', 'del', bridge], { timeout: 10_000 }));
    cleanups.push(() => void spawnSync('ip', ['link', 'del', outer], { timeout: 10_000 }));
    // The restore fails after its outer name was chosen (free then): meanwhile another session's criu made a
    // link of that name, as two restores racing for one name would.
    const dest = await startDest({
      bridge,
      pageSource: () => ({
        prepare: () => {
          ip(['link', 'add', outer, 'type', 'veth', 'peer', 'name', `fyp${tag}`]);
          return Promise.reject(new FerryError('REBUILD_PAGE_MISSING', { side: 'dest', phase: 'restore', detail: 'this test' }));
        },
        verify: () => Promise.resolve(0),
      }),
    });
    cleanups.push(() => dest.close());
    const req = prepareRequest();
    await dest.client.prepare(req);
    const id = req.migrationId;
    await upload(dest.client, [chunk(id, 'inventory.img', Buffer.from('i')), chunk(id, 'pstree.img', Buffer.from('p'))]);
    const taskNetwork = { ...NET, outerLink: outer, bridge };
    await expectFerryRejection(dest.client.restore({ migrationId: id, epoch: EPOCH, pages: [], timeoutMs: 1000, commitLeaseMs: 1000, taskNetwork }), 'REBUILD_PAGE_MISSING');
    expect(await dest.client.abort({ migrationId: id, epoch: EPOCH, reason: 'test' })).toMatchObject({ existed: true, killedRestoredCopy: false });
    expect(linkExists(outer)).toBe(true);
  }, 30_000);
});
