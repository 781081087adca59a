/**
 * The freeze lease: a tiny guard process, outside the agent's process group, that thaws the frozen tree if
 * the agent goes silent (crash, kill -9, Ctrl-C that kills the whole group) or the deadline passes. The agent
 * disarms it right before committing; the guard answers "disarmed" only if it has not fired, so exactly one
 * of them decides the fate of the original.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { FerryError } from '../shared/errors/ferry-error.js';

// bash: `read -t` returns on a line, on EOF (the agent died: its end of the pipe closed) or on the deadline.
const GUARD = `
deadline=$1; pgid=$2; shift 2
if IFS= read -r -t "$deadline" line && [ "$line" = disarm ]; then echo disarmed; exit 0; fi
kill -CONT -- "-$pgid" 2>/dev/null
for pid in "$@"; do kill -CONT "$pid" 2>/dev/null; done
echo fired
`;

export class FreezeLease {
  private readonly guard: ChildProcessWithoutNullStreams;
  private readonly answer: Promise<string>;
  private settled = false;

  /** Arms the lease for the tree whose process group is `pgid` (and these pids, for other groups). */
  constructor(deadlineMs: number, pgid: number, pids: number[]) {
    this.guard = spawn('bash', ['-c', GUARD, 'ferry-freeze-lease', (deadlineMs / 1000).toFixed(3), String(pgid), ...pids.map(String)], {
      detached: true, // its own process group: a Ctrl-C to the agent's group must not take the guard with it
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.answer = new Promise<string>((resolve) => {
      let out = '';
      this.guard.stdout.on('data', (d: Buffer) => (out += d.toString()));
      this.guard.on('close', () => resolve(out.trim()));
      this.guard.on('error', (e) => resolve(`error: ${e.message}`));
    });
    // Not unref'd: while the lease is armed the agent has a reason to live; disarm() or release() ends it.
  }

  /** True once the guard has thawed the tree on its own (deadline); the migration must then roll back. */
  async fired(): Promise<boolean> {
    if (this.guard.exitCode === null) return false;
    return (await this.answer) === 'fired';
  }

  /**
   * Takes the decision back from the guard. Resolves when the guard confirms it will never thaw; throws
   * FREEZE_LEASE_EXPIRED if it already did.
   */
  async disarm(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.guard.stdin.end('disarm\n');
    const answer = await this.answer;
    if (answer !== 'disarmed') {
      throw new FerryError('FREEZE_LEASE_EXPIRED', { phase: 'commit', side: 'source', sourceState: 'running', detail: `freeze guard: ${answer}` });
    }
  }

  /** Rollback: let the guard thaw now (it is what it does when its input closes). */
  async release(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.guard.stdin.end();
    await this.answer;
  }
}
