/**
 * How long a fuzz test runs, and from which seed, from the environment:
 *   FERRY_FUZZ_SEED        replay a run (printed by every fuzz test; decimal or 0x hex); random otherwise
 *   FERRY_FUZZ_ITERATIONS  inputs (or calls) to run; the test's default otherwise
 *   FERRY_FUZZ_SECONDS     run for this long instead (with ITERATIONS too: whichever ends first)
 * Without them a test runs its default count under a time cap that fails the test if it is reached, so CI
 * stays within its couple of minutes and a slow run is seen, never silently cut short.
 */
import { randomInt } from 'node:crypto';

export interface FuzzBudget {
  seed: number;
  /** Inputs to run at most (Infinity: until the time is up). */
  iterations: number;
  /** Stop starting new inputs after this many milliseconds. */
  timeMs: number;
  /** Whether reaching the time is the plan (FERRY_FUZZ_SECONDS) or a failure (the CI cap). */
  timed: boolean;
  /** The line each fuzz test prints, enough to replay it. */
  describe(what: string): string;
}

function envNumber(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw} is not a non-negative number`);
  return n;
}

export function fuzzBudget(defaults: { iterations: number; capSeconds: number }): FuzzBudget {
  const seedText = process.env.FERRY_FUZZ_SEED;
  const seed = seedText ? Number(seedText) >>> 0 : randomInt(0, 2 ** 32 - 1);
  if (seedText && !Number.isFinite(Number(seedText))) throw new Error(`FERRY_FUZZ_SEED=${seedText} is not a number`);
  const iterationsEnv = envNumber('FERRY_FUZZ_ITERATIONS');
  const secondsEnv = envNumber('FERRY_FUZZ_SECONDS');
  const timed = secondsEnv !== undefined;
  const iterations = iterationsEnv ?? (timed ? Infinity : defaults.iterations);
  const timeMs = (secondsEnv ?? defaults.capSeconds) * 1000;
  return {
    seed,
    iterations,
    timeMs,
    timed,
    describe: (what) =>
      `${what}: seed ${seed} (replay: FERRY_FUZZ_SEED=${seed}), ${Number.isFinite(iterations) ? `${iterations} iterations` : 'no iteration cap'}, ` +
      `${timed ? `${timeMs / 1000} s` : `cap ${timeMs / 1000} s`}`,
  };
}
