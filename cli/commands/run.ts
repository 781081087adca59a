import { runTask, type RunningTask } from '../../source-agent/run-task.js';
import { isolationValue, type Isolation } from '../../source-agent/task-isolation.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { parse } from '../args.js';
import { EXIT } from '../exit-codes.js';

export const RUN_HELP = `Usage: ferry run [--name NAME] [--log-dir DIR] [--ipc host|private] [--mounts host|private]
                 [--net ADDRESS/PREFIX... [--bridge BR] [--gateway GW] [--gateway6 GW6] [--mac MAC]] [--json]
                 -- CMD [ARGS...]

Starts CMD as a task Ferry can migrate: pid 1 of its own pid namespace, its own session, stdin from
/dev/null, stdout and stderr appended to DIR/NAME.out and DIR/NAME.err, no inherited file descriptors.
Prints the task's pid, for \`ferry migrate PID --to HOST:PORT\`.
The log files are reopened by path after a migration, so DIR must exist on the dest too.

Options:
  --name NAME      the task's name, used for its log files (default: the command's name)
  --log-dir DIR    default /var/log/ferry/tasks
  --ipc private    its own IPC namespace: its SysV shared memory, message queues and semaphores move
                   with it (CRIU refuses SysV shared memory in the host's namespace). Default host.
  --mounts private its own mount namespace (propagation private) with a /proc of its own pid namespace,
                   so /proc/self and /proc/1 are the task's. It starts as a copy of the host's mounts
                   (less /run/netns names and the host's /proc); those stay the host's: on the dest the
                   same paths are bind-mounted from the dest, so they must exist there. Mounts the task
                   makes itself (a tmpfs, say) move with it. Default host.
  --net ADDRESS/PREFIX
                   its own network namespace and address, IPv4 or IPv6 (global or unique local), which
                   move with it; repeat it for more (dual stack), at most 8: a veth, eth0 inside (lo up,
                   IPv6 addresses without DAD, a default route per family via GW / GW6), fy + 8 hex
                   outside on the bridge BR. Each address must be free on BR (an ARP or DAD probe
                   nobody answers). A gratuitous ARP or unsolicited neighbor advertisement announces
                   each when the task starts. Default: the host's network namespace.
  --bridge BR      the bridge the veth joins (default ferry0), created (and set up) if missing: enslave
                   the host's uplink to it (\`ip link set eth0 master ferry0\`, moving eth0's address to
                   the bridge) so that the task is on the segment. The dest needs a bridge too.
  --gateway GW     the task's default IPv4 route (default: BR's own IPv4 address in a task's subnet, if
                   it has one; else no default IPv4 route)
  --gateway6 GW6   the task's default IPv6 route: an address in a task's IPv6 prefix or a router's fe80::
                   address (default: BR's own global IPv6 address in a task's prefix, if it has one)
  --mac MAC        the task's MAC (default: a random locally administered one); it moves with the task
  --json           print {"pid":..,"launcherPid":..,"stdout":..,"stderr":..[,"network":{..}]}`;

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      name: { type: 'string' },
      'log-dir': { type: 'string' },
      ipc: { type: 'string' },
      mounts: { type: 'string' },
      net: { type: 'string', multiple: true },
      bridge: { type: 'string' },
      gateway: { type: 'string' },
      gateway6: { type: 'string' },
      mac: { type: 'string' },
      json: { type: 'boolean' },
    },
    true,
  );
  if (values.help) {
    console.log(RUN_HELP);
    return EXIT.ok;
  }
  const [command, ...args] = positionals;
  if (!command) throw new FerryError('BAD_ARGUMENT', { message: 'ferry run needs a command after --', hint: 'Usage: ferry run -- CMD [ARGS...]' });
  const ipc = isolationFlag('--ipc', values.ipc);
  const mounts = isolationFlag('--mounts', values.mounts);
  const name = values.name ?? (command.split('/').pop() || 'task');
  if (values.net === undefined && (values.bridge ?? values.gateway ?? values.gateway6 ?? values.mac) !== undefined) {
    throw new FerryError('BAD_ARGUMENT', { message: '--bridge, --gateway, --gateway6 and --mac need --net', hint: 'Give the task its address with --net ADDRESS/PREFIX, or drop them.' });
  }
  const network = values.net === undefined ? undefined : { net: values.net, bridge: values.bridge, gateway: values.gateway, gateway6: values.gateway6, mac: values.mac };
  // Ctrl-C (SIGINT/SIGTERM) before the pid is printed: the task is killed and its namespace, veth and a bridge
  // made for it removed (exit 130), rather than left behind by the default exit.
  const controller = new AbortController();
  const onSignal = (): void => controller.abort(new FerryError('CANCELLED', { message: 'ferry run was interrupted; what it had made is removed' }));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let task: RunningTask;
  try {
    task = await runTask({ command, args, name, logDir: values['log-dir'] ?? '/var/log/ferry/tasks', isolation: { ipc, mounts }, network, signal: controller.signal });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  console.log(values.json ? JSON.stringify(task) : String(task.pid));
  return EXIT.ok;
}

function isolationFlag(flag: string, v: string | undefined): Isolation {
  const iso = isolationValue(v);
  if (iso === undefined) throw new FerryError('BAD_ARGUMENT', { message: `${flag} must be host or private (got "${v}")`, hint: `Give ${flag} host (the default) or ${flag} private.` });
  return iso;
}
