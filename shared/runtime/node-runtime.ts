/**
 * The Node.js release Ferry runs on, beyond what package.json's `engines` says (shared/node-engines.ts reads
 * that range): the end of life of each LTS line in it, and the start-up refusal of a release outside it.
 */
import { satisfiesEngines } from '../node-engines.js';

/** nodejs.org's release schedule for the lines of package.json's engines (`^20.19.0 || ^22.12.0 || >=24.0.0`). */
const END_OF_LIFE: Readonly<Record<number, string>> = { 20: '2026-04-30', 22: '2027-04-30', 24: '2028-04-30' };

/** The newest line CI tests (.ci/run: `npm run test:node24`): the one to move to. */
export const NEWEST_TESTED_LINE = 24;

/** For `ferry check`'s node line of each side: its end of life, or that it is past it (Node 20 still runs here). */
export function nodeLifeNote(version: string, now: Date = new Date()): string {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
  const eol = END_OF_LIFE[major];
  if (eol === undefined) return major > NEWEST_TESTED_LINE ? `newer than the Node lines CI tests (up to ${NEWEST_TESTED_LINE})` : 'not a line CI tests';
  return now.toISOString().slice(0, 10) > eol ? `past its end of life (${eol}): move to Node ${NEWEST_TESTED_LINE}` : `supported until ${eol}`;
}

/**
 * Why this Node cannot run Ferry (outside `engines`), or undefined. A range the reader does not understand is no
 * reason to refuse: `ferry check` says so instead.
 */
export function unsupportedNode(version: string, engines: string): string | undefined {
  return satisfiesEngines(version, engines) === false ? `Node ${version} is outside package.json's engines (${engines})` : undefined;
}
