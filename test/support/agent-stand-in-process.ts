/** Starts agent-stand-in.ts in a process of its own and reads its step lines; for tests that kill -9 it. */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { repoRoot } from '../../shared/repo-root.js';
import type { Requirement } from '../../testbed/requirements.js';

const VITE_NODE = join(repoRoot(), 'node_modules', '.bin', 'vite-node');
const SCRIPT = join(repoRoot(), 'test', 'support', 'agent-stand-in.ts');
/** vite-node compiles the sources on start: a few seconds on a busy 2-core host. */
const START_MS = 30_000;

export const standInRequirement: Requirement = { ok: existsSync(VITE_NODE), reason: `needs ${VITE_NODE}` };

export interface StandIn {
  readonly pid: number;
  /** The next line it prints; rejects after `timeoutMs` or when it exits first. */
  next(timeoutMs?: number): Promise<string>;
  /** SIGKILL; resolves once it has exited. Idempotent. */
  kill9(): Promise<void>;
}

export function startStandIn(args: readonly string[]): StandIn {
  const child: ChildProcessByStdio<null, Readable, null> = spawn(VITE_NODE, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buffered = '';
  let exited = false;
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
    wake();
  });
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      wake();
      resolve();
    }),
  );
  return {
    pid: child.pid!,
    next: async (timeoutMs = START_MS) => {
      const until = Date.now() + timeoutMs;
      while (lines.length === 0) {
        if (exited) throw new Error(`agent stand-in ${args[0]} exited before its next line`);
        const left = until - Date.now();
        if (left <= 0) throw new Error(`agent stand-in ${args[0]} printed nothing within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return lines.shift()!;
    },
    kill9: async () => {
      if (!exited) child.kill('SIGKILL');
      await exit;
    },
  };
}
