/**
 * A task with its own network identity on a host of the L2 segment, made the way `ferry run --net` makes one
 * (docs: issue 16's design): a network namespace, a veth whose inner end `eth0` (the MAC given, the address,
 * lo up, a default route via the host's bridge address) is in it and whose outer end `fy` + 8 hex is on the
 * host's task bridge, up; the program runs as pid 1 of its own pid namespace and session leader, its stdio on
 * /dev/null (no other fd: node's children inherit none). The namespace's temporary name is deleted once the
 * task runs, so that only the task pins it (netns-tcp-lab, pitfall 1): when the task dies, the veth goes.
 * stop() kills the task (and whatever copy the test registers with `also`), by pid.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { Host } from '../netns-hosts.js';
import { waitFor } from '../wait-for.js';

export interface NetTask {
  /** The task's root (pid 1 of its pid namespace), as this host sees it. */
  readonly pid: number;
  readonly address: string;
  readonly mac: string;
  readonly outerLink: string;
  /** Kills this pid too at stop() (a restored copy, by the pid the migration reported). */
  also(pid: number): void;
  stop(): void;
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** Starts `argv` in a network namespace of its own on `host`'s bridge, at address/prefix, via `gateway`. */
export async function startNetTask(host: Host, bridge: string, address: string, prefix: number, gateway: string, argv: readonly string[]): Promise<NetTask> {
  const tag = randomBytes(4).toString('hex');
  const ns = `ferry-nt-${process.pid}-${tag}`;
  const outerLink = `fy${tag}`;
  const mac = `02:${tag.match(/../g)!.join(':')}:64`;
  const pids: number[] = [];
  let launcher: ChildProcess | undefined;
  const stop = (): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    launcher?.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', ns], { timeout: 10_000 });
    spawnSync('ip', ['-n', host.name, 'link', 'del', outerLink], { timeout: 10_000 });
  };
  try {
    ip(['netns', 'add', ns]);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    ip(['-n', host.name, 'link', 'add', outerLink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    ip(['-n', ns, 'link', 'set', 'eth0', 'address', mac]);
    ip(['-n', ns, 'addr', 'add', `${address}/${prefix}`, 'dev', 'eth0']);
    ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    ip(['-n', ns, 'route', 'add', 'default', 'via', gateway]);
    ip(['-n', host.name, 'link', 'set', outerLink, 'master', bridge, 'up']);
    launcher = spawn('unshare', ['--pid', '--fork', 'nsenter', `--net=/run/netns/${ns}`, 'setsid', ...argv], { stdio: 'ignore' });
    let pid = 0;
    const comm = basename(argv[0]!).slice(0, 15);
    await waitFor(
      () => {
        pid = Number(readFileSync(`/proc/${launcher!.pid!}/task/${launcher!.pid!}/children`, 'utf8').trim().split(' ')[0] || 0);
        return pid > 0 && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
      },
      10_000,
      'the net task to start',
    );
    pids.push(pid);
    ip(['netns', 'del', ns]);
    return { pid, address, mac, outerLink, also: (p) => pids.push(p), stop };
  } catch (e) {
    stop();
    throw e;
  }
}
