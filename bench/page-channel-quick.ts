/**
 * Issue 15's page channels by count, reps interleaved (bench/data-plane.ts runs each cell once): one idle
 * memtest migrated unshaped between the two netns hosts with mutual TLS, by `--page-channels N` for each N
 * given (0 = the gRPC StreamPages of before), interleaved `reps` times. Prints round 0's MiB/s and the CPU
 * seconds per GiB sent of the migrate process (the source) and of the dest agent, and iperf3 over the same
 * veth. `npx vite-node bench/page-channel-quick.ts [MiB] [reps] [N,N,...]` (root, CRIU).
 */
import { execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createTwoHosts, makeTempDir, startDestAgent, startMigrate, type TwoHosts } from '../testbed/two-hosts.js';
import { startMemtest } from '../testbed/workloads/memtest.js';
import { cpuSeconds } from './data-plane-ferry.js';

const MIB = Number(process.argv[2] ?? 512);
const REPS = Number(process.argv[3] ?? 2);
const CHANNELS = (process.argv[4] ?? '0,1,2').split(',').map(Number);

async function iperf(hosts: TwoHosts): Promise<number> {
  const server = spawn(hosts.enter(hosts.dst)[0]!, [...hosts.enter(hosts.dst).slice(1), 'iperf3', '-s', '-1'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  const out = execFileSync(hosts.enter(hosts.src)[0]!, [...hosts.enter(hosts.src).slice(1), 'iperf3', '-c', hosts.dst.address, '-t', '3', '-J']).toString();
  server.kill();
  return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 8 / 2 ** 20;
}

async function main(): Promise<void> {
  const hosts = await createTwoHosts();
  const stateDir = makeTempDir('ferry-pcq-state-');
  const imagesRoot = makeTempDir('ferry-pcq-images-');
  try {
    console.log(`iperf3 over the veth: ${(await iperf(hosts)).toFixed(0)} MiB/s`);
    for (let rep = 0; rep < REPS; rep++) {
      for (const n of CHANNELS) {
        const dest = await startDestAgent(hosts);
        const task = await startMemtest({ name: `pcq-${process.pid}-${rep}-${n}`, mib: MIB, dirtyMibPerSec: 0, stateDir, netns: hosts.src.netns });
        try {
          const destCpu0 = cpuSeconds(dest.pid) ?? 0;
          const run = startMigrate(hosts, task.rootPid, dest, { env: { FERRY_IMAGES_DIR: imagesRoot }, timeoutMs: 120_000, args: ['--page-channels', String(n)] });
          let srcCpu = 0;
          const poll = setInterval(() => (srcCpu = cpuSeconds(run.child.pid!) ?? srcCpu), 20);
          const r = await run.done;
          clearInterval(poll);
          const destCpu = (cpuSeconds(dest.pid) ?? 0) - destCpu0;
          if (!r.summary) throw new Error(`migration failed: ${JSON.stringify(r.error)} ${r.stderr.slice(-2000)}`);
          task.adopt(r.summary.restoredPid);
          const r0 = r.summary.rounds[0]!;
          const gib = r.summary.pageBytesSent / 2 ** 30;
          const row = `N=${n} rep ${rep}: round 0 ${(r0.bytesSent / 2 ** 20 / (r0.durationMs / 1000)).toFixed(0)} MiB/s (${r0.durationMs.toFixed(0)} ms, transfer ${r0.transferMs.toFixed(0)} ms), total ${r.summary.totalMs} ms; CPU s/GiB source ${(srcCpu / gib).toFixed(2)} dest ${(destCpu / gib).toFixed(2)}`;
          console.log(row);
        } finally {
          await task.stop();
          await dest.stop();
        }
      }
    }
  } finally {
    await hosts.destroy();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(imagesRoot, { recursive: true, force: true });
  }
}

await main();
