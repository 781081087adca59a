/** docs/errors.md, generated from the registry so that the two never disagree (a unit test compares them). */
import { ERRORS } from './codes.js';

const FAMILIES: Record<string, string> = {
  '0': 'usage',
  '1': 'negotiate / preflight',
  '2': 'prepare',
  '3': 'precopy',
  '4': 'freeze',
  '5': 'final-delta',
  '6': 'restore',
  '7': 'commit',
  '8': 'rollback',
  '9': 'internal',
};

export function renderErrorDocs(): string {
  const rows = Object.entries(ERRORS)
    .sort(([, a], [, b]) => a.code.localeCompare(b.code))
    .map(([key, s]) => `| ${s.code} | ${FAMILIES[s.code.charAt(6)] ?? '?'} | \`${key}\` | ${s.title} | ${s.hint} | ${s.retryable ? 'yes' : 'no'} |`);
  return [
    '# Ferry error codes',
    '',
    '<!-- Generated from shared/errors/codes.ts by `npm run docs:errors`; do not edit by hand. -->',
    '',
    'Every failure Ferry reports carries one of these stable codes. The first digit is the phase family.',
    'Scripts should match on the code, never on the message. `ferry migrate` exits with 2 for refused input',
    '(families 0 and 1, nothing was touched), 1 for a failure after which the task runs on the source,',
    '3 when the state is unknown, 130 when interrupted and rolled back.',
    '',
    '| code | family | key | meaning | what to do | retryable |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
