/**
 * nftBatch (nft-tables.ts) when the kernel refuses a batch whole: its error comes on BATCH_BEGIN's seq 1 (here,
 * a process without CAP_NET_ADMIN: nfnetlink answers the first message EPERM). The answer must be that errno at
 * once, not EAGAIN after the socket's receive timeout (2 s, which the freeze would wait). The child runs in a
 * namespace of this test's own, removed after it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../testbed/ferry-process.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const EPERM = 1;
const runnable = canRun('nft batch refused whole', isRoot(), hasCommand('ip'), hasCommand('capsh'));

describe.skipIf(!runnable)('nftBatch refused at BATCH_BEGIN (real kernel)', () => {
  const name = `ferry-it-nftb-${process.pid}`;
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-nft-batch-'));
    const r = spawnSync('ip', ['netns', 'add', name], { timeout: 10_000 });
    if (r.status !== 0) throw new Error(`ip netns add: ${r.stderr.toString()}`);
  });
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('returns the errno of seq 1 at once (no CAP_NET_ADMIN: EPERM), not EAGAIN after the receive timeout', () => {
    const script = join(dir, 'batch.ts');
    writeFileSync(
      script,
      [
        `import { newTableWithChains, nftBatch } from ${JSON.stringify(join(REPO_ROOT, 'shared/kernel/nft-tables.ts'))};`,
        `import { THIS_NETNS } from ${JSON.stringify(join(REPO_ROOT, 'shared/kernel/netns-socket.ts'))};`,
        'const start = Date.now();',
        "const errno = nftBatch(THIS_NETNS, newTableWithChains({ family: 'inet', name: 'ferry-it-batch' }, [{ name: 'input', hook: 'input', priority: 0, policy: 'drop' }]));",
        'console.log(JSON.stringify({ errno, ms: Date.now() - start }));',
      ].join('\n'),
    );
    const viteNode = join(REPO_ROOT, 'node_modules', '.bin', 'vite-node');
    const r = spawnSync('ip', ['netns', 'exec', name, 'capsh', '--drop=cap_net_admin', '--', '-c', `exec ${viteNode} ${script}`], { encoding: 'utf8', timeout: 30_000, cwd: REPO_ROOT });
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    expect(line, r.stderr).toMatch(/^\{/);
    const { errno, ms } = JSON.parse(line) as { errno: number; ms: number };
    expect(errno).toBe(EPERM);
    // The receive timeout is 2 s; the kernel's answer comes within milliseconds.
    expect(ms).toBeLessThan(1_000);
  }, 40_000);
});
