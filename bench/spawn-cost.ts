/**
 * What one spawn costs a node process of a given RSS (`npx vite-node bench/spawn-cost.ts [MiB...]`, seconds, no
 * root). libuv forks, and fork copies the page tables of every anonymous page, so a spawn inside the freeze (the
 * pager, criu restore on the dest; criu dump on the source) costs in proportion to the agent's RSS. The dest agent
 * once kept every received page batch alive (dest-agent/stream-idle.ts) and reached 1.3 GB at a 1 GiB migration.
 * Measured here (2 shared vCPUs): 44 MB 0.7 ms, 300 MB 11 ms, 1 GB 48 ms (median of 15 spawns of /bin/true).
 */
import { spawn } from 'node:child_process';

const SIZES_MIB = process.argv.slice(2).map(Number).filter((n) => n >= 0);
const SPAWNS = 15;

async function spawnMs(): Promise<number> {
  const ts: number[] = [];
  for (let i = 0; i < SPAWNS; i++) {
    const t = performance.now();
    const child = spawn('/bin/true', [], { stdio: 'ignore' });
    ts.push(performance.now() - t);
    await new Promise((ok) => child.once('exit', ok));
  }
  return ts.sort((a, b) => a - b)[SPAWNS >> 1]!;
}

async function main(): Promise<void> {
  const held: Buffer[] = [];
  console.log('| RSS (MiB) | spawn median (ms) |\n|---|---|');
  for (const mib of SIZES_MIB.length > 0 ? SIZES_MIB : [0, 256, 1024]) {
    while (held.length < mib) held.push(Buffer.alloc(1 << 20, 1)); // touched: resident anonymous memory
    console.log(`| ${Math.round(process.memoryUsage.rss() / 2 ** 20)} | ${(await spawnMs()).toFixed(2)} |`);
  }
}

await main();
