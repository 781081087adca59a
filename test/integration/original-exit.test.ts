/**
 * `migrate` returns only once the original is gone (source-agent/migration/kill-original.ts): a process killed
 * with much memory and many mappings is still exiting (R or D) for a while after SIGKILL, as ZDTM maps06 was when
 * migrate returned 0. A real tree (a parent and a child, each with 20,000 file mappings and 256 MiB written),
 * stopped as a frozen original is, killed through the real source host; no pid of it may be alive at the return.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logging/logger.js';
import { readStat } from '../../shared/kernel/proc-status.js';
import { stillExiting, waitExited } from '../../shared/kernel/process-wait.js';
import { treePids } from '../../shared/kernel/signal-tree.js';
import { killOriginal } from '../../source-agent/migration/kill-original.js';
import { realSourceHost } from '../../source-agent/migration/ports.js';
import { canRun, hasCommand, isRoot } from '../../testbed/requirements.js';

const TARGET_C = String.raw`
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static void load(const char *file) {
  int fd = open(file, O_RDONLY);
  if (fd < 0) _exit(3);
  // Alternating protections keep the kernel from merging neighbours: one VMA per mapping.
  for (int i = 0; i < 20000; i++) if (mmap(NULL, 4096, (i & 1) ? PROT_READ : PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) _exit(4);
  size_t big = 256UL << 20;
  char *a = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) _exit(5);
  memset(a, 7, big);
}
int main(int argc, char **argv) {
  (void)argc;
  setpgid(0, 0);
  pid_t c = fork();
  load(argv[1]);
  if (c == 0) { for (;;) pause(); }
  sleep(1); // the child loads meanwhile (the parent's own load took as long)
  printf("ready %d\n", (int)c);
  fflush(stdout);
  for (;;) pause();
}
`;

const run = canRun('original exit wait', isRoot(), hasCommand('gcc'));

describe.runIf(run)('the original is gone when the commit returns', () => {
  let dir = '';
  const children: ChildProcess[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ferry-original-exit-'));
    writeFileSync(join(dir, 'target.c'), TARGET_C);
    writeFileSync(join(dir, 'mapped'), Buffer.alloc(4096, 1));
    execFileSync('gcc', ['-O1', '-o', join(dir, 'target'), join(dir, 'target.c')]);
  });

  afterAll(() => {
    for (const c of children) if (c.pid !== undefined) for (const pid of treePids(c.pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    rmSync(dir, { recursive: true, force: true });
  });

  async function startTree(): Promise<{ root: number; child: number }> {
    const c = spawn(join(dir, 'target'), [join(dir, 'mapped')], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(c);
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: c.stdout });
      const timer = setTimeout(() => reject(new Error('target not ready in 20 s')), 20_000);
      rl.once('line', (l) => {
        clearTimeout(timer);
        rl.close();
        resolve(l);
      });
    });
    return { root: c.pid!, child: Number(/^ready (\d+)$/.exec(line)![1]) };
  }

  it('killOriginal waits until every process of a stopped tree with many mappings has exited', async () => {
    const { root, child } = await startTree();
    expect(readFileMaps(root)).toBeGreaterThan(20_000);
    for (const pid of [root, child]) process.kill(pid, 'SIGSTOP'); // frozen, as the dump leaves it
    const procs = [root, child].map((pid) => ({ pid, startTime: readStat(pid)?.startTime }));
    const log = createLogger({ side: 'source' }, () => undefined);
    const exit = await killOriginal({ host: realSourceHost, log, signal: AbortSignal.timeout(60_000) }, root);
    expect(exit.left).toEqual([]);
    expect(procs.filter(stillExiting)).toEqual([]);
    console.log(`a tree of 2 processes, 40,000 file mappings and 512 MiB written: gone ${exit.exitMs.toFixed(1)} ms after SIGKILL`);
  }, 60_000);

  it('names the processes that are not gone when the wait ends', async () => {
    const { root, child } = await startTree();
    const procs = [root, child].map((pid) => ({ pid, startTime: readStat(pid)?.startTime }));
    // Not killed: still alive after the budget.
    expect(await waitExited(procs, 50)).toEqual([root, child]);
    // A pid that names another process now (start time differs) is the original no more.
    expect(await waitExited([{ pid: root, startTime: (procs[0]!.startTime ?? 0) + 1 }], 50)).toEqual([]);
    for (const pid of [root, child]) process.kill(pid, 'SIGKILL');
    expect(await waitExited(procs, 30_000)).toEqual([]);
  }, 60_000);
});

function readFileMaps(pid: number): number {
  return execFileSync('wc', ['-l', `/proc/${pid}/maps`], { encoding: 'utf8' }).trim().split(' ').map(Number)[0] ?? 0;
}
