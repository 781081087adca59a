/**
 * The dest agent under hostile input: >= 10,000 calls across every Dest call (Negotiate, Prepare,
 * StreamPages, UploadImages, Restore, Commit, Abort), made of valid migrations, field-level mutations (huge,
 * empty and path-like strings, edge numbers, wrong epochs, broken batches, reordered and duplicated seqs,
 * streams cut short), and byte-level mutations of encoded messages (dest-scenarios.ts). Four clients run at
 * once, each on its own connection. Checked:
 *   - no crash: the agent answers a health Negotiate (on a fresh connection) throughout and at the end;
 *   - no hang: every call ends before its deadline, and the agent stops within a bound afterwards;
 *   - every rejection is coded: a ferry-error-bin trailer with a known code, on the code's gRPC status;
 *   - nothing outside the work dir: the sandbox around it is unchanged, no path a payload named appeared,
 *     Prepare names a dir inside it, the work dir holds only sessions, and nothing once the agent stopped;
 *   - bounded output: small trailers, bounded log lines, no epoch revealed, disk use within what was sent,
 *     open files within a bound;
 *   - two resident sessions, which the fuzz tries to reach by id, survive intact.
 * CRIU never runs: the page source is the real store-backed chain (so fuzzed pagemaps go through the real
 * decoder and checks), but where it would hand over to `criu restore` it refuses with a marked
 * CRIU_RESTORE_FAILED instead; those calls are counted as "reached restore".
 *
 * The fuzz clients run in plaintext on loopback, so they are one peer (the address without its port): the
 * dest's per-peer bounds apply to all of them together, which FUZZ_LIMITS allows for.
 *
 * What fails on this tree because of an open finding is in KNOWN_FINDINGS: those inputs are kept out of the
 * strict checks and counted, and each finding has an `it.fails` that flips (fails) once the finding is
 * fixed: then remove it from the list.
 *
 * FERRY_FUZZ_SEED / _ITERATIONS / _SECONDS (fuzz-budget.ts); FERRY_FUZZ_SCENARIO=N replays scenario N alone.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DestService } from '../../dest-agent/dest-service.js';
import { createDestMetrics } from '../../dest-agent/dest-metrics.js';
import { ImageChainPageSource } from '../../dest-agent/image-chain.js';
import type { DestLimits } from '../../dest-agent/dest-limits.js';
import type { RestorePageSourceFactory } from '../../dest-agent/restore-page-source.js';
import { ERRORS, keyForCode } from '../../shared/errors/codes.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { createLogger } from '../../shared/logging/logger.js';
import { startAgentServer } from '../../shared/transport/agent-server.js';
import { ferryProto } from '../../shared/transport/proto.js';
import { INSECURE_LOOPBACK } from '../../shared/transport/transport-security.js';
import { startDest } from '../support/dest-grpc.js';
import { dumpImages, imageChunks, negotiateRequest, pageBatches, prepareRequest, restoreRequest, syntheticDump, type SyntheticDump } from './dest-messages.js';
import { fuzzEpoch, fuzzId, PROBE_SCENARIO, runBrokenStreamsProbe, runProbes, runScenario, type CallRecord, type ResourceCheck, type ScenarioEnv, type ScenarioResult } from './dest-scenarios.js';
import { fuzzBudget } from './fuzz-budget.js';
import { FuzzRandom } from './fuzz-random.js';
import { encodeRequest, RawDestClient, type CallOutcome, type DestCall } from './raw-dest-client.js';

const MIN_CALLS = 10_000;
const WORKERS = 4;
const DEADLINE_MS = Number(process.env.FERRY_FUZZ_DEADLINE_MS ?? 5_000);
const HEALTH_EVERY = 20;
const STOP_WITHIN_MS = 10_000;
/** Error details are cut to 1 KiB (issue 9): with the JSON around them a trailer stays well under this. */
const MAX_TRAILER_BYTES = 4096;
const MAX_LOG_LINE = 16 * 1024;
const WITHHELD = 'fuzz: criu restore withheld';
const SESSION_DIR = /^[A-Za-z0-9-]{8,64}$/;

type Verdict = 'ok' | 'coded' | 'reached-restore' | 'cancelled-by-client' | 'not-sent' | 'hang' | 'uncoded' | 'miscoded';

function verdict(o: CallOutcome): Verdict {
  if (o.code === grpc.status.OK) return 'ok';
  // The client's own limit: a message the fuzzer should not have made (the dest never saw it).
  if (!o.trailer && o.details.startsWith('Attempted to send message with a size larger than')) return 'not-sent';
  if (o.ferry) {
    const key = keyForCode(o.ferry.code);
    if (!key) return 'uncoded';
    if (ERRORS[key].grpc !== o.code) return 'miscoded';
    return key === 'CRIU_RESTORE_FAILED' && o.ferry.detail === WITHHELD ? 'reached-restore' : 'coded';
  }
  if (o.cancelledByClient && o.code === grpc.status.CANCELLED) return 'cancelled-by-client';
  if (o.code === grpc.status.DEADLINE_EXCEEDED) return 'hang';
  return 'uncoded';
}

interface KnownFinding {
  id: string;
  what: string;
  /** The call records this finding explains (kept out of the strict checks). */
  matches?: (r: CallRecord, v: Verdict) => boolean;
  /** The resource checks it explains. */
  resource?: (c: ResourceCheck) => boolean;
  /** The log lines it explains. */
  log?: (line: string) => boolean;
}

/**
 * Findings the fuzz hits on this tree, matched narrowly so that anything else still fails the strict checks.
 * The findings of issue 9 (echoes that wedged a connection, big trailers, the epoch in errors and its status,
 * zero pages on disk, a store file per page, whole strings in the log, undecodable messages answered without
 * a code, a broken stream holding its slot) were here and flipped: the probes of dest-scenarios.ts keep
 * hitting each of them, under the strict checks now. Empty today; a new finding goes here with its probe.
 */
const KNOWN_FINDINGS: readonly KnownFinding[] = [];

/** The agent's own limits: every fuzz client is one peer (plaintext: the address without the port). */
const FUZZ_LIMITS: Partial<DestLimits> = {};

/** Runs runBrokenStreamsProbe against a dest of its own that allows 4 streams per peer and never idles one out during the probe. */
async function brokenStreamsProbe(env: ScenarioEnv): Promise<ScenarioResult> {
  const dest = await startDest({ limits: { maxStreamsPerPeer: 4, streamIdleMs: 60_000 } });
  try {
    return await runBrokenStreamsProbe({ ...env, address: dest.address, workDir: dest.workDir }, 5);
  } finally {
    await within(STOP_WITHIN_MS, dest.close());
  }
}

/** The real page source up to the point where criu restore would run; then a marked refusal. */
const withheldRestore: RestorePageSourceFactory = (session) => {
  const real = new ImageChainPageSource(session);
  return {
    async prepare(manifests) {
      await real.prepare(manifests);
      await real.verify(); // reads the store back and closes it, as it would beside CRIU
      throw new FerryError('CRIU_RESTORE_FAILED', { side: 'dest', phase: 'restore', detail: WITHHELD });
    },
    verify: () => Promise.resolve(0),
  };
};

/** type:size:mtime of everything under `root` but `skip`. */
async function snapshot(root: string, skip: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (path === skip) continue;
      const st = await lstat(path);
      out.set(relative(root, path), `${st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f'}:${st.size}:${st.mtimeMs}`);
      if (st.isDirectory()) await walk(path);
    }
  };
  await walk(root);
  return out;
}

const within = <T>(ms: number, p: Promise<T>): Promise<T | 'timeout'> =>
  Promise.race([p, new Promise<'timeout'>((ok) => setTimeout(() => ok('timeout'), ms).unref())]);

interface Resident {
  id: string;
  epoch: string;
  dump: SyntheticDump;
}

interface Campaign {
  records: CallRecord[];
  resources: ResourceCheck[];
  workDirs: string[];
  scenarios: number;
  messages: number;
  seconds: number;
  health: { failures: string[]; checks: number; slowestMs: number };
  workDirStrays: string[];
  uncaught: string[];
  residentsAfter: { id: string; verdict: Verdict; detail: string }[];
  stopped: boolean;
  sandboxChanges: string[];
  escapes: string[];
  leftInWorkDir: string[];
  log: { lines: number; longest: number; unexplained: string[]; known: Map<string, number> };
}

const budget = fuzzBudget({ iterations: MIN_CALLS, capSeconds: 150 });
const onlyScenario = process.env.FERRY_FUZZ_SCENARIO === undefined ? undefined : Number(process.env.FERRY_FUZZ_SCENARIO);
let campaign: Campaign;
let sandbox: string | undefined;
let stopAgent: (() => Promise<unknown>) | undefined;
let restoreProcess: (() => void) | undefined;

async function runCampaign(): Promise<Campaign> {
  sandbox = await mkdtemp(join(tmpdir(), 'ferry-fuzz-'));
  const workDir = join(sandbox, 'work');
  await mkdir(join(sandbox, 'outside', 'sub'), { recursive: true });
  await mkdir(workDir);
  await writeFile(join(sandbox, 'outside', 'canary.img'), 'canary');
  await writeFile(join(sandbox, 'outside', 'sub', 'canary.img'), 'canary');

  // Every warn line is seen, whatever FERRY_LOG_LEVEL says outside.
  const savedLevel = process.env.FERRY_LOG_LEVEL;
  process.env.FERRY_LOG_LEVEL = 'info';
  const log = { lines: 0, longest: 0, unexplained: [] as string[], known: new Map<string, number>() };
  const logger = createLogger({ side: 'dest' }, (line) => {
    log.lines++;
    log.longest = Math.max(log.longest, line.length);
    if (line.length <= MAX_LOG_LINE) return;
    const known = KNOWN_FINDINGS.find((k) => k.log?.(line));
    if (known) log.known.set(known.id, (log.known.get(known.id) ?? 0) + 1);
    else if (log.unexplained.length < 5) log.unexplained.push(`${line.length} chars: ${line.slice(0, 300)}`);
  });

  const uncaught: string[] = [];
  const onUncaught = (e: unknown): void => void uncaught.push(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  restoreProcess = () => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    if (savedLevel === undefined) delete process.env.FERRY_LOG_LEVEL;
    else process.env.FERRY_LOG_LEVEL = savedLevel;
  };

  const service = new DestService({ workDir, log: logger, metrics: createDestMetrics(new Registry()), pageSource: withheldRestore, limits: FUZZ_LIMITS });
  // The agent's own server (its interceptors decide what a bad message is answered with), in plaintext.
  const agent = await startAgentServer({
    service: ferryProto().Dest.service,
    handlers: service.handlers(),
    listen: { host: '127.0.0.1', port: 0 },
    registry: new Registry(),
    closeService: () => service.close(),
    security: INSECURE_LOOPBACK,
    side: 'dest',
  });
  // Until the campaign stops it itself (and measures that): whatever fails first, afterAll stops it.
  stopAgent = () => within(STOP_WITHIN_MS, agent.close());
  const port = agent.port;
  const address = `127.0.0.1:${port}`;
  const before = await snapshot(sandbox, workDir);

  // Two sessions that live through the whole run, with their pages and images in place.
  const setupRnd = FuzzRandom.stream(budget.seed, 0x7fff_ffff);
  const residents: Resident[] = [0, 1].map(() => ({ id: fuzzId(setupRnd), epoch: fuzzEpoch(setupRnd), dump: syntheticDump(setupRnd) }));
  const setup = new RawDestClient(address, 10_000);
  const feed = (r: Resident): Promise<CallOutcome> =>
    setup.call('StreamPages', pageBatches(r.id, r.epoch, r.dump, 0n, setupRnd).map((b) => encodeRequest('StreamPages', b)));
  for (const r of residents) {
    const prepared = await setup.call('Prepare', [encodeRequest('Prepare', prepareRequest(r.id, r.epoch, r.dump))]);
    expect(verdict(prepared), `resident ${r.id} prepare: ${prepared.details}`).toBe('ok');
    const pages = await feed(r);
    expect(verdict(pages), `resident ${r.id} pages: ${pages.details}`).toBe('ok');
    const images = await setup.call('UploadImages', imageChunks(r.id, r.epoch, dumpImages(r.dump), setupRnd).map((c) => encodeRequest('UploadImages', c)));
    expect(verdict(images), `resident ${r.id} images: ${images.details}`).toBe('ok');
  }

  // What the agent keeps in its work dir besides sessions (its marker), once it has opened it.
  const baseline = new Set((await readdir(workDir)).filter((n) => !residents.some((r) => r.id === n)));
  const env: ScenarioEnv = { seed: budget.seed, address, deadlineMs: DEADLINE_MS, sandbox, workDir, namedPaths: new Set(), residentIds: residents.map((r) => r.id) };
  const probes = await runProbes(env, residents[0]!);
  const broken = await brokenStreamsProbe(env);
  const records: CallRecord[] = [...probes.records, ...broken.records];
  const resources: ResourceCheck[] = [...probes.resources];
  const workDirs: string[] = [...probes.workDirs];
  const health = { failures: [] as string[], checks: 0, slowestMs: 0 };
  const workDirStrays = new Set<string>();
  let nextScenario = 0;
  let scenarios = 0;
  let messages = probes.records.reduce((n, r) => n + r.outcome.sent, 0);
  const started = performance.now();
  const more = (): boolean => records.length < budget.iterations && performance.now() - started < budget.timeMs;

  const checkHealth = async (when: string): Promise<void> => {
    const probe = new RawDestClient(address, DEADLINE_MS);
    const o = await probe.call('Negotiate', [encodeRequest('Negotiate', negotiateRequest())]);
    probe.close();
    health.checks++;
    health.slowestMs = Math.max(health.slowestMs, o.elapsedMs);
    if (o.code !== grpc.status.OK) health.failures.push(`${when}: ${o.code} ${o.details}`);
    for (const name of await readdir(workDir)) if (!baseline.has(name) && name !== 'logs' && !SESSION_DIR.test(name)) workDirStrays.add(name);
  };

  const worker = async (w: number): Promise<void> => {
    for (let n = 1; onlyScenario === undefined ? more() : n === 1; n++) {
      const index = onlyScenario ?? nextScenario++;
      const result = await runScenario(index, env).catch((e: unknown) => {
        throw new Error(`scenario ${index} failed to run (FERRY_FUZZ_SEED=${budget.seed} FERRY_FUZZ_SCENARIO=${index})`, { cause: e });
      });
      scenarios++;
      records.push(...result.records);
      resources.push(...result.resources);
      workDirs.push(...result.workDirs);
      for (const r of result.records) messages += r.outcome.sent;
      if (n % HEALTH_EVERY === 0) {
        await checkHealth(`worker ${w} after scenario ${index}`);
        // Keeps the residents from looking idle to a session TTL: their own pages, once more.
        const outcome = await feed(residents[w % residents.length]!);
        records.push({ scenario: PROBE_SCENARIO, kind: 'probe', step: 'keep-alive', ops: [], raw: false, longest: 0, huge: false, undecodable: false, wrongEpochOf: undefined, outcome });
      }
    }
  };
  await Promise.all(Array.from({ length: onlyScenario === undefined ? WORKERS : 1 }, (_, w) => worker(w)));
  const seconds = (performance.now() - started) / 1000;
  await checkHealth('at the end');

  // The residents were reachable by id all along; with their epoch they must still restore whole.
  const residentsAfter = [];
  for (const r of residents) {
    const o = await setup.call('Restore', [encodeRequest('Restore', restoreRequest(r.id, r.epoch, r.dump))]);
    residentsAfter.push({ id: r.id, verdict: verdict(o), detail: `${o.code} ${o.ferry?.code ?? ''} ${o.ferry?.detail ?? o.details}` });
  }
  setup.close();

  stopAgent = undefined;
  const stopped = (await within(STOP_WITHIN_MS, agent.close())) !== 'timeout';
  restoreProcess();
  restoreProcess = undefined;

  const after = await snapshot(sandbox, workDir);
  const sandboxChanges = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k)).map((k) => `${k}: ${before.get(k) ?? 'absent'} -> ${after.get(k) ?? 'absent'}`);
  // Every path a payload named, resolved from wherever the agent might have taken it.
  const escapes: string[] = [];
  for (const p of env.namedPaths) {
    for (const base of [workDir, join(workDir, 'x', 'images'), sandbox, process.cwd(), tmpdir(), '/']) {
      const target = resolve(base, p);
      if (/escape/.test(target) && existsSync(target)) escapes.push(`${p} -> ${target}`);
    }
  }
  const leftInWorkDir = (await readdir(workDir)).filter((n) => !baseline.has(n) && n !== 'logs');
  if (existsSync(join(workDir, 'logs'))) leftInWorkDir.push(...(await readdir(join(workDir, 'logs'))).map((n) => `logs/${n}`));

  return { records, resources, workDirs, scenarios, messages, seconds, health, workDirStrays: [...workDirStrays], uncaught, residentsAfter, stopped, sandboxChanges, escapes, leftInWorkDir, log };
}

/** The first few records of `list`, described enough to replay each. */
function describeRecords(list: readonly CallRecord[], n = 5): string[] {
  return list.slice(0, n).map(
    (r) =>
      `${r.scenario === PROBE_SCENARIO ? 'probe' : `scenario ${r.scenario}`} (${r.kind}/${r.step}, FERRY_FUZZ_SEED=${budget.seed} FERRY_FUZZ_SCENARIO=${r.scenario}) ${r.outcome.call}: ` +
      `status ${r.outcome.code} "${r.outcome.details.slice(0, 120)}" trailer ${r.outcome.trailer?.length ?? 0} B, ${Math.round(r.outcome.elapsedMs)} ms; ops ${r.ops.join(' ').slice(0, 300)}`,
  );
}

const knownFor = (r: CallRecord): KnownFinding | undefined => KNOWN_FINDINGS.find((k) => k.matches?.(r, verdict(r.outcome)));

function report(c: Campaign): string {
  const byCall = new Map<string, number>();
  const byCode = new Map<string, number>();
  const msByCall = new Map<string, number>();
  for (const r of c.records) {
    msByCall.set(r.outcome.call, (msByCall.get(r.outcome.call) ?? 0) + r.outcome.elapsedMs);
    const v = verdict(r.outcome);
    const key = `${r.outcome.call} ${v}`;
    byCall.set(key, (byCall.get(key) ?? 0) + 1);
    if (v === 'coded' || v === 'reached-restore') {
      const code = `${r.outcome.ferry!.code} ${keyForCode(r.outcome.ferry!.code)}`;
      byCode.set(code, (byCode.get(code) ?? 0) + 1);
    }
  }
  const known = KNOWN_FINDINGS.map((k) => `  ${k.id}: ${knownHits(c, k)}`);
  const lines = (m: Map<string, number>): string[] => [...m].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `  ${k}: ${n}`);
  return [
    `dest fuzz: ${c.records.length} calls (${c.messages} messages) in ${c.scenarios} scenarios, ${c.seconds.toFixed(1)} s, ${WORKERS} clients; seed ${budget.seed}`,
    `health checks ${c.health.checks}, slowest ${Math.round(c.health.slowestMs)} ms; log lines ${c.log.lines}, longest ${c.log.longest} chars`,
    'calls by verdict:',
    ...lines(byCall),
    'rejections by code:',
    ...lines(byCode),
    `time in calls (s): ${[...msByCall].map(([k, ms]) => `${k} ${(ms / 1000).toFixed(1)}`).join(', ')}`,
    'known findings (hits):',
    ...known,
  ].join('\n');
}

function knownHits(c: Campaign, k: KnownFinding): number {
  let n = 0;
  if (k.matches) n += c.records.filter((r) => k.matches!(r, verdict(r.outcome))).length;
  if (k.resource) n += c.resources.filter((d) => k.resource!(d)).length;
  if (k.log) n += c.log.known.get(k.id) ?? 0;
  return n;
}

describe(`the dest agent under >= ${MIN_CALLS} hostile calls`, () => {
  beforeAll(async () => {
    console.log(budget.describe('dest fuzz'));
    campaign = await runCampaign();
    console.log(report(campaign));
    if (onlyScenario !== undefined) console.log(describeRecords(campaign.records, Infinity).join('\n'));
  }, budget.timeMs + 120_000);

  afterAll(async () => {
    await stopAgent?.();
    restoreProcess?.();
    if (sandbox) await rm(sandbox, { recursive: true, force: true });
  });

  it('ran enough calls, across every Dest call', () => {
    if (onlyScenario !== undefined) return;
    if (!budget.timed) expect(campaign.records.length, `the time cap of ${budget.timeMs / 1000} s ended the run early`).toBeGreaterThanOrEqual(Math.min(budget.iterations, MIN_CALLS));
    expect(describeRecords(campaign.records.filter((r) => verdict(r.outcome) === 'not-sent')), 'messages over the 64 MiB limit').toEqual([]);
    const calls = new Set<DestCall>(campaign.records.map((r) => r.outcome.call));
    expect([...calls].sort()).toEqual(['Abort', 'Commit', 'Negotiate', 'Prepare', 'Restore', 'StreamPages', 'UploadImages']);
    // The deep paths were reached: pages stored, images written, restores that got as far as CRIU.
    const verdicts = campaign.records.map((r) => `${r.outcome.call} ${verdict(r.outcome)}`);
    for (const v of ['StreamPages ok', 'UploadImages ok', 'Restore reached-restore', 'Prepare ok', 'Abort ok']) expect(verdicts, v).toContain(v);
  });

  it('no crash: the agent answered every health check, and nothing was thrown unhandled', () => {
    expect(campaign.health.failures).toEqual([]);
    expect(campaign.uncaught).toEqual([]);
  });

  it('no hang: every call ended before its deadline, and the agent stopped in time', () => {
    const hangs = campaign.records.filter((r) => verdict(r.outcome) === 'hang' && !knownFor(r));
    expect(describeRecords(hangs)).toEqual([]);
    expect(campaign.stopped, `the agent did not stop within ${STOP_WITHIN_MS} ms`).toBe(true);
  });

  it('every rejection carries a known Ferry code in ferry-error-bin, on the gRPC status of that code', () => {
    const bad = campaign.records.filter((r) => ['uncoded', 'miscoded'].includes(verdict(r.outcome)) && !knownFor(r));
    expect(describeRecords(bad)).toEqual([]);
  });

  it('nothing outside the work dir: the sandbox is unchanged and no path a payload named exists', () => {
    expect(campaign.sandboxChanges).toEqual([]);
    expect(campaign.escapes).toEqual([]);
    const root = resolve(sandbox!, 'work');
    expect(campaign.workDirs.filter((d) => !(resolve(d).startsWith(`${root}/`) && SESSION_DIR.test(relative(root, resolve(d)))))).toEqual([]);
  });

  it('the work dir holds only session dirs while the agent runs, and nothing of them once it stopped', () => {
    expect(campaign.workDirStrays).toEqual([]);
    expect(campaign.leftInWorkDir).toEqual([]);
  });

  it('error trailers stay small, and a wrong epoch is refused as such without revealing the right one', () => {
    const big = campaign.records.filter((r) => (r.outcome.trailer?.length ?? 0) > MAX_TRAILER_BYTES && !knownFor(r));
    expect(describeRecords(big)).toEqual([]);
    const leaks = campaign.records.filter((r) => r.wrongEpochOf !== undefined && r.outcome.trailer?.toString('utf8').includes(r.wrongEpochOf) && !knownFor(r));
    expect(describeRecords(leaks)).toEqual([]);
    // The proto: a wrong epoch is FAILED_PRECONDITION (SESSION_EPOCH_MISMATCH), not "already exists".
    const probe = campaign.records.find((r) => r.step === 'wrong-epoch');
    expect(probe?.outcome.ferry?.code).toBe(ERRORS.SESSION_EPOCH_MISMATCH.code);
    const existing = campaign.records.filter((r) => r.wrongEpochOf !== undefined && r.outcome.call !== 'Prepare' && r.outcome.code === grpc.status.ALREADY_EXISTS);
    expect(describeRecords(existing)).toEqual([]);
  });

  it('a session never holds more on disk than was sent to it, nor more than a bound of open files', () => {
    const over = campaign.resources.filter((c) => c.used > c.bound && !KNOWN_FINDINGS.some((k) => k.resource?.(c)));
    expect(over.slice(0, 5)).toEqual([]);
  });

  it('no bound refused the fuzz: it never holds more than 5 streams and 7 sessions at once', () => {
    const bounded = campaign.records.filter(
      (r) => [ERRORS.DEST_TOO_MANY_STREAMS.code, ERRORS.DEST_TOO_MANY_SESSIONS.code].includes(r.outcome.ferry?.code as never) && !knownFor(r),
    );
    expect(describeRecords(bounded)).toEqual([]);
  });

  it('log lines stay bounded', () => {
    expect(campaign.log.unexplained).toEqual([]);
  });

  it('the resident sessions survived the fuzz whole: with their epoch, their restore still reaches CRIU', () => {
    expect(campaign.residentsAfter.map((r) => [r.id, r.verdict, r.detail])).toEqual(campaign.residentsAfter.map((r) => [r.id, 'reached-restore', r.detail]));
  });

  for (const k of KNOWN_FINDINGS) {
    // Fails (and so passes here) while the finding stands; once fixed this test fails: remove the finding.
    it.fails(`KNOWN_FINDINGS ${k.id}: ${k.what}`, () => {
      if (onlyScenario !== undefined) throw new Error('a single scenario proves nothing about a finding');
      expect(knownHits(campaign, k)).toBe(0);
    });
  }
});
