/**
 * CRIU's own ZDTM static tests, a suite nobody here wrote, each carried by `ferry migrate` between the two netns
 * hosts and judged by its own PASS/FAIL (testbed/zdtm/zdtm-test.ts), against testbed/zdtm/expected-results.json:
 * an expected pass must pass, an expected failure must still fail (a pass means the file is stale: update it),
 * and a test that cannot be valid on one machine is run and shown but never counted. npm test runs the "ci"
 * list; `npm run test:zdtm` (FERRY_ZDTM=full) runs every listed test. The suite comes from Debian's source
 * package of CRIU (scripts/provision-zdtm.sh); without it the file skips with the reason.
 */
import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRun, hasCommand, isRoot, type Requirement } from '../../testbed/requirements.js';
import { createTwoHosts, hasCriu, makeTempDir, requireBuilt, startDestAgent, type DestAgentHandle, type TwoHosts } from '../../testbed/two-hosts.js';
import { provisionZdtm, runZdtmTest, type ZdtmOutcome } from '../../testbed/zdtm/zdtm-test.js';

interface Expectation {
  expect: 'pass' | 'fail' | 'invalid';
  category?: string;
  reason?: string;
  /** The FERRY code an expected failure fails with: a failure for another cause is no match. */
  code?: string;
  /** More `ferry run` flags: the run flavor (zdtm runs the test only in its ns flavor: a private IPC or mount namespace). */
  run?: string[];
}
interface ExpectedResults {
  migrateArgs: string[];
  /** The CI list's own flags (none: the default restore, lazy), where they differ from the full list's. */
  ciMigrateArgs?: string[];
  ci: string[];
  tests: Record<string, Expectation>;
}

const expected = JSON.parse(readFileSync(new URL('../../testbed/zdtm/expected-results.json', import.meta.url), 'utf8')) as ExpectedResults;
const FULL = process.env.FERRY_ZDTM === 'full';
const only = process.env.FERRY_ZDTM_TESTS?.split(',').filter(Boolean);
const selected = only?.length ? only : FULL ? Object.keys(expected.tests) : expected.ci;

const base =
  canRun('ZDTM through ferry migrate', isRoot(), hasCommand('ip'), hasCommand('nsenter'), hasCommand('unshare'), hasCommand('gcc'), hasCommand('make')) &&
  canRun('ZDTM through ferry migrate (CRIU)', hasCriu());
const suite = base ? provisionZdtm() : { reason: 'not provisioned' };
const runnable = base && canRun('ZDTM through ferry migrate (the suite)', { ok: suite.dir !== undefined, reason: suite.reason } satisfies Requirement);

describe.skipIf(!runnable)(`CRIU ZDTM static tests through ferry migrate (${FULL ? 'full list' : 'CI part'}: ${selected.length})`, () => {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let logDir: string | undefined;
  let imagesDir: string | undefined;
  const outcomes: ZdtmOutcome[] = [];

  beforeAll(async () => {
    requireBuilt();
    logDir = makeTempDir('ferry-zdtm-logs-');
    imagesDir = makeTempDir('ferry-zdtm-images-');
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts);
  }, 60_000);

  afterAll(async () => {
    await dest?.stop();
    await hosts?.destroy();
    for (const d of [logDir, imagesDir]) if (d) rmSync(d, { recursive: true, force: true });
    console.log(table(outcomes));
  });

  for (const test of selected) {
    it(test, async () => {
      const want = expected.tests[test];
      expect(want, `${test} is not in testbed/zdtm/expected-results.json`).toBeDefined();
      const got = await runZdtmTest(test, { hosts: hosts!, dest: dest!, staticDir: suite.dir!, logDir: logDir!, imagesDir: imagesDir!, runArgs: want!.run, migrateArgs: FULL || only ? expected.migrateArgs : (expected.ciMigrateArgs ?? expected.migrateArgs) });
      outcomes.push(got);
      const seen = `${got.verdict} at ${got.stage}${got.code ? ` (${got.code})` : ''}: ${got.detail}`;
      if (want!.expect === 'pass') expect(got.verdict, seen).toBe('pass');
      else if (want!.expect === 'fail') {
        expect(got.verdict, `expected to fail (${want!.reason}) but passed: update expected-results.json`).toBe('fail');
        if (want!.code) expect(got.code, `expected to fail with ${want!.code}; ${seen}`).toBe(want!.code);
        // Every failed migration rolls back: the original runs on and passes its own check on the source.
        if (got.stage === 'migrate') expect(got.rollback, seen).toEqual({ clean: true, detail: expect.any(String) });
      }
    }, 150_000);
  }
});

function table(outcomes: ZdtmOutcome[]): string {
  const invalid = outcomes.filter((o) => expected.tests[o.test]?.expect === 'invalid');
  const valid = outcomes.filter((o) => expected.tests[o.test]?.expect !== 'invalid');
  const passed = valid.filter((o) => o.verdict === 'pass');
  const downtimes = passed.flatMap((o) => (o.downtimeMs === undefined ? [] : [o.downtimeMs])).sort((a, b) => a - b);
  const median = downtimes.length ? Math.round(downtimes[Math.floor(downtimes.length / 2)]!) : 0;
  const lines = [
    `ZDTM through ferry migrate: ran ${outcomes.length}, valid ${valid.length}, passed ${passed.length}` +
      (downtimes.length ? ` (downtime ${Math.round(downtimes[0]!)}-${Math.round(downtimes.at(-1)!)} ms, median ${median} ms)` : ''),
  ];
  for (const o of valid.filter((v) => v.verdict !== 'pass')) {
    const want = expected.tests[o.test];
    const tag = want?.expect === 'fail' ? `expected, ${want.category}` : 'UNEXPECTED';
    const rollback = o.rollback ? `\n       rollback: ${o.rollback.clean ? 'clean' : 'NOT CLEAN'}: ${o.rollback.detail.split('\n')[0]}` : '';
    lines.push(`  FAIL ${o.test} [${tag}] at ${o.stage}${o.code ? ` ${o.code}` : ''}: ${o.detail.split('\n')[0]}${want?.reason ? `\n       why: ${want.reason}` : ''}${rollback}`);
  }
  for (const o of valid.filter((v) => v.verdict === 'pass' && expected.tests[v.test]?.expect === 'fail')) lines.push(`  UNEXPECTED PASS ${o.test}: update expected-results.json`);
  // How far the policy's estimate was from the freeze (issue 13 item 5): the worst ratios, either way.
  const ratios = passed.flatMap((o) => (o.downtimeMs && o.expectedDowntimeMs ? [{ o, r: o.downtimeMs / o.expectedDowntimeMs }] : []));
  if (ratios.length) {
    const far = ratios.sort((x, y) => Math.max(y.r, 1 / y.r) - Math.max(x.r, 1 / x.r)).slice(0, 3);
    lines.push(`  downtime / estimate: ${far.map(({ o, r }) => `${o.test} ${Math.round(o.downtimeMs!)}/${Math.round(o.expectedDowntimeMs!)} ms = ${r.toFixed(2)}`).join(', ')}`);
  }
  for (const o of invalid) lines.push(`  not valid here ${o.test} (${o.verdict}, not counted): ${expected.tests[o.test]!.reason}`);
  return lines.join('\n');
}
