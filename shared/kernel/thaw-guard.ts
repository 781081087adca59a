/**
 * A thaw guard: a tiny bash process, in a process group of its own (a Ctrl-C to the agent's group must not take
 * it along), that resumes a tree with SIGCONT when this process dies (its end of the guard's stdin closes) or
 * a deadline passes, unless it is disarmed first. It answers "disarmed" only if it has not fired, so exactly
 * one of the two decides whether the tree is resumed. The freeze lease and the duty-cycle throttle use it.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

// A line at a time: `disarm` ends it without a signal, `pids LIST` replaces the pids resumed besides the
// group, `wait PID` names a process to outlive before firing (a criu dump: killed while it injects its
// parasite it kills the task, and left running it would stop the tree again; bounded at 120 s), `before
// ARGV` (tab-separated; empty: none) a command to run before the SIGCONT (the undo of a --tcp-established
// dump; bounded at 20 s). EOF and the deadline (`read -t`, when one is given) make it fire.
const SCRIPT = `
deadline=$1; group=$2; shift 2
waitpid=
before=
while IFS= read -r \${deadline:+-t "$deadline"} line; do
  case $line in
    disarm) echo disarmed; exit 0 ;;
    pids*) set -- \${line#pids} ;;
    wait*) waitpid=\${line#wait } ;;
    before*) before=\${line#before} ; before=\${before#?} ;;
  esac
done
# Until it is gone or a zombie (its reaper may be slow to reap it): the state after the ") " of /proc/PID/stat.
n=0
while [ -n "$waitpid" ] && [ $n -lt 2400 ]; do
  st=$(cat "/proc/$waitpid/stat" 2>/dev/null) || break
  st=\${st##*) }
  case \${st%% *} in Z|X) break ;; esac
  sleep 0.05; n=$((n+1))
done
if [ -n "$before" ]; then
  IFS=$'\\t' read -ra cmd <<< "$before"
  timeout 20 "\${cmd[@]}" </dev/null >/dev/null 2>&1
fi
kill -CONT -- "-$group" 2>/dev/null
for pid in "$@"; do kill -CONT "$pid" 2>/dev/null; done
echo fired
`;

export interface ThawGuardOptions {
  /** Shown as the guard's command name in ps. */
  name: string;
  /** The process group to resume, and more pids (processes in other groups). */
  pgid: number;
  pids: readonly number[];
  /** Fire on its own after this long without a line (the freeze lease); without one, only on EOF. */
  deadlineMs?: number;
  /**
   * Whether the armed guard keeps this process alive. The freeze lease does (a frozen tree is a reason to
   * live); the throttle's guard does not, so that it never keeps the agent alive on its own.
   */
  keepAlive: boolean;
  /** SIGKILL the guard if it has not answered a disarm by then (a stuck guard must not hang the caller). */
  disarmTimeoutMs?: number;
}

export interface ThawGuardEnd {
  /** 'disarmed', 'fired', '' (killed before it answered) or 'error: ...' (it could not run). */
  answer: string;
  /** Its exit code or the signal that ended it. */
  exit: number | NodeJS.Signals | null;
}

export class ThawGuard {
  /** Resolves once the guard runs; rejects when it cannot be started. Awaiting it is optional. */
  readonly spawned: Promise<void>;
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private readonly ended: Promise<ThawGuardEnd>;
  private ending: Promise<ThawGuardEnd> | undefined;

  /** Arms the guard at once. */
  constructor(private readonly opts: ThawGuardOptions) {
    const deadline = opts.deadlineMs === undefined ? '' : (opts.deadlineMs / 1000).toFixed(3);
    this.child = spawn('bash', ['-c', SCRIPT, opts.name, deadline, String(opts.pgid), ...opts.pids.map(String)], {
      detached: true,
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const child = this.child;
    this.spawned = new Promise((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    this.spawned.catch(() => undefined); // a failed start is also the answer of `ended`
    this.ended = new Promise((resolve) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.once('close', (code, signal) => resolve({ answer: out.trim(), exit: code ?? signal }));
      // Only a failed start ends it here; after a failed kill it still runs until its 'close'.
      child.on('error', (e) => {
        if (child.pid === undefined) resolve({ answer: `error: ${e.message}`, exit: null });
      });
    });
    // A guard that died makes writes fail with EPIPE: its answer tells, no stream event may throw.
    child.stdin.on('error', () => undefined);
    if (!opts.keepAlive) this.setRef(false);
  }

  /** Replaces the pids it resumes besides the process group (a deadline, if any, starts again). */
  update(pids: readonly number[]): void {
    this.child.stdin.write(`pids ${pids.join(' ')}\n`);
  }

  /** When it fires, it runs this command (after the wait, before the SIGCONT, at most 20 s); [] for none. */
  runBeforeThaw(argv: readonly string[]): void {
    if (argv.some((a) => /[\t\n]/.test(a))) throw new Error('a thaw guard command argument holds a tab or a newline');
    this.child.stdin.write(`before ${argv.join('\t')}\n`);
  }

  /** When it fires, it first waits (at most 120 s) for this process to end: a criu dump of the tree. */
  waitFor(pid: number): void {
    this.child.stdin.write(`wait ${pid}\n`);
  }

  /** Ends the guard without a signal to the tree if it has not fired; resolves once it has exited. */
  disarm(): Promise<ThawGuardEnd> {
    return this.end('disarm\n', this.opts.disarmTimeoutMs);
  }

  /** Lets the guard fire now (what it does when this process dies); resolves once it has exited. */
  fire(): Promise<ThawGuardEnd> {
    return this.end('');
  }

  /** The first of disarm() and fire() decides; later calls get the same end. */
  private end(line: string, killAfterMs?: number): Promise<ThawGuardEnd> {
    this.ending ??= (async () => {
      // Referenced while the caller waits: this process must stay alive to see the answer.
      this.setRef(true);
      this.child.stdin.end(line);
      const timer = killAfterMs === undefined ? undefined : setTimeout(() => this.child.kill('SIGKILL'), killAfterMs);
      const end = await this.ended;
      clearTimeout(timer);
      return end;
    })();
    return this.ending;
  }

  private setRef(ref: boolean): void {
    // The pipes are net.Sockets underneath, which the stream types do not show.
    const handles = [this.child, this.child.stdin, this.child.stdout] as unknown as { ref(): void; unref(): void }[];
    for (const h of handles) {
      if (ref) h.ref();
      else h.unref();
    }
  }
}
