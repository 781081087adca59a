/**
 * Which Node.js releases Ferry runs on. One table, from which package.json's `engines` (checked by a unit test),
 * the start-up refusal (cli/main.ts) and `ferry check`'s runtime line are derived.
 */

interface ReleaseLine {
  readonly major: number;
  /** The first minor of the line Ferry supports: the floor of its own tooling (vite 7: ^20.19.0 || >=22.12.0). */
  readonly minMinor: number;
  /** The line's end of life (nodejs.org's release schedule), as YYYY-MM-DD. */
  readonly endOfLife: string;
}

/** The LTS lines CI runs the suites under (.ci/run: the machine's Node 20, then scripts/provision-node.sh 24). */
const LINES: readonly ReleaseLine[] = [
  { major: 20, minMinor: 19, endOfLife: '2026-04-30' },
  { major: 22, minMinor: 12, endOfLife: '2027-04-30' },
  { major: 24, minMinor: 0, endOfLife: '2028-04-30' },
];
const NEWEST = LINES.at(-1)!;

/** package.json's `engines.node`: every listed line from its floor, and any major after the newest. */
export const NODE_ENGINES = LINES.map((l) => (l === NEWEST ? `>=${l.major}.${l.minMinor}.0` : `^${l.major}.${l.minMinor}.0`)).join(' || ');

/**
 * `supported`: a listed line within its life; `end-of-life`: a listed line past it (it runs and is tested while
 * machines still ship it, but a root agent should not stay on it); `untested`: a major after the newest listed;
 * `unsupported`: anything else (older, an odd line in between, below a line's floor): start-up refuses it.
 */
export type RuntimeStatus = 'supported' | 'end-of-life' | 'untested' | 'unsupported';

export interface NodeRuntime {
  /** As process.version prints it: v24.22.3. */
  readonly version: string;
  readonly status: RuntimeStatus;
  /** One line for `ferry check` and for the refusal. */
  readonly note: string;
}

const SUPPORTED_TEXT = LINES.map((l) => `${l.major}.${l.minMinor}+`).join(', ');

/** Classifies a Node version (default: this process's) at `now`. */
export function nodeRuntime(version: string = process.versions.node, now: Date = new Date()): NodeRuntime {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  const v = `v${version.replace(/^v/, '')}`;
  const line = LINES.find((l) => l.major === major);
  if (line && minor >= line.minMinor) {
    if (now.toISOString().slice(0, 10) > line.endOfLife) {
      return { version: v, status: 'end-of-life', note: `Node ${major} reached its end of life on ${line.endOfLife}: move to Node ${NEWEST.major}` };
    }
    return { version: v, status: 'supported', note: `supported until ${line.endOfLife}` };
  }
  if (major > NEWEST.major) return { version: v, status: 'untested', note: `newer than the Node releases Ferry is tested on (${SUPPORTED_TEXT})` };
  return { version: v, status: 'unsupported', note: `Ferry runs on Node ${SUPPORTED_TEXT} (package.json engines: ${NODE_ENGINES})` };
}
