/**
 * The agents' log (shared/logging/): the context read at each line, the field order, the text format for a
 * terminal and its colours, the bounds, what is never written (page bytes, secrets), and the refusal of a
 * level or a format Ferry does not know.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ERRORS } from '../../shared/errors/codes.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { compileLogOptions, type LogOptions } from '../../shared/logging/log-options.js';
import { createLogger, loggerFrom, type LogFields } from '../../shared/logging/logger.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

const ESC = '\x1b[';

function capture(opts: LogOptions = {}, base: LogFields = { side: 'source' }): { lines: string[]; log: ReturnType<typeof loggerFrom> } {
  const lines: string[] = [];
  const log = loggerFrom(compileLogOptions({ env: {}, isTTY: false, defaultLevel: 'debug', ...opts }), base, (l) => lines.push(l));
  return { lines, log };
}

const parsed = (lines: readonly string[]): LogFields[] => lines.map((l) => JSON.parse(l) as LogFields);

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('the context of a line', () => {
  it('is read when the line is written, not when the logger was made', () => {
    const state: { phase: string; round: number | undefined } = { phase: 'negotiate', round: undefined };
    const { lines, log } = capture();
    const mig = log.child({ migrationId: 'm-1' }).withContext(() => ({ phase: state.phase, round: state.round }));
    const throttle = mig.child({ method: 'cgroup' }); // made before the round, as the throttle is
    mig.info('started');
    state.phase = 'precopy';
    state.round = 0;
    throttle.warn('throttle not applied');
    state.round = 3;
    throttle.warn('throttle not applied');
    state.phase = 'freeze';
    state.round = undefined;
    mig.info('frozen');
    const recs = parsed(lines);
    expect(recs.map((r) => [r.phase, r.round])).toEqual([['negotiate', undefined], ['precopy', 0], ['precopy', 3], ['freeze', undefined]]);
    expect(recs.every((r) => r.side === 'source' && r.migrationId === 'm-1')).toBe(true);
    expect(recs[1]!.method).toBe('cgroup');
    // An absent round is left out, never null.
    expect('round' in recs[3]!).toBe(false);
  });

  it("lets a line's own fields win over the context, and keeps ts, level and msg whatever a field says", () => {
    const { lines, log } = capture();
    log.withContext(() => ({ phase: 'precopy', round: 4 })).info('round done', { round: 3, msg: 'forged', level: 'error', ts: 'then' });
    const [r] = parsed(lines);
    expect(r!.round).toBe(3);
    expect(r!.phase).toBe('precopy');
    expect(r!.msg).toBe('round done');
    expect(r!.level).toBe('info');
    expect(r!.ts).not.toBe('then');
  });

  it('puts the documented fields first, in their order, and lifts a Ferry code out of err', () => {
    const { lines, log } = capture();
    log.child({ migrationId: 'm-2', extra: 1 }).withContext(() => ({ round: 1, phase: 'precopy' })).error('failed', { err: new FerryError('PRECOPY_NOT_CONVERGING') });
    const r = parsed(lines)[0]!;
    expect(Object.keys(r).slice(0, 8)).toEqual(['ts', 'level', 'msg', 'side', 'migrationId', 'phase', 'round', 'code']);
    expect(r.code).toBe(ERRORS.PRECOPY_NOT_CONVERGING.code);
    expect((r.err as LogFields).code).toBe(ERRORS.PRECOPY_NOT_CONVERGING.code);
    // An errno code stays inside err.
    log.warn('io', { err: Object.assign(new Error('nope'), { code: 'ENOENT' }) });
    expect(parsed(lines)[1]!.code).toBeUndefined();
  });

  it('survives a context that throws', () => {
    const { lines, log } = capture();
    log
      .withContext(() => {
        throw new Error('broken');
      })
      .info('still written');
    expect(parsed(lines)[0]!.msg).toBe('still written');
  });
});

describe('the bounds and what is never written', () => {
  it('cuts strings and lists, and writes a Buffer as its length only', () => {
    const { lines, log } = capture();
    log.withContext(() => ({ phase: 'p'.repeat(50_000) })).warn('big', { name: 'x'.repeat(100_000), pids: Array.from({ length: 100_000 }, (_, i) => i), page: Buffer.alloc(4096, 0x41) });
    expect(lines[0]!.length).toBeLessThan(4096);
    const r = parsed(lines)[0]!;
    expect(r.page).toBe('<4096 bytes>');
    expect(lines[0]).not.toContain('AAAA');
    expect(r.pids as unknown[]).toHaveLength(65);
  });

  it('never writes key material, a secret-named field or a URL password; a key path is fine', () => {
    const { lines, log } = capture({ format: 'json' } as LogOptions);
    const pem = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----';
    log.warn('TLS files on disk not taken', { problem: `cannot parse ${pem} here`, keyPath: '/etc/ferry/tls/agent.key', token: 'abc123', err: new Error(`bad key ${pem}`) });
    log.info('push', { url: 'https://ferry:hunter2@push.example:9091/metrics' });
    const text = lines.join('\n');
    expect(text).not.toContain('MIIEvQ');
    expect(text).not.toContain('abc123');
    expect(text).not.toContain('hunter2');
    const [r, push] = parsed(lines);
    expect(r!.keyPath).toBe('/etc/ferry/tls/agent.key');
    expect(r!.token).toBe('[redacted]');
    expect(push!.url).toBe('https://ferry:***@push.example:9091/metrics');
  });
});

describe('the text format', () => {
  const at = (text: string): string => text.replace(/^\d\d:\d\d:\d\d\.\d{3} /, 'T ');

  it('is HH:MM:SS.mmm LEVEL side id[:8] phase/round msg key=value, with no colour off a terminal', () => {
    const { lines, log } = capture({ env: { FERRY_LOG_FORMAT: 'text' } });
    const mig = log.child({ migrationId: '3f2a9c1e-0000-4000-8000-000000000000' });
    mig.withContext(() => ({ phase: 'precopy', round: 2 })).warn('throttle raised', { percent: 40, method: 'cgroup cpu.max', dest: '10.0.0.2:7070' });
    mig.withContext(() => ({ phase: 'freeze' })).info('frozen');
    log.info('source agent listening');
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} /);
    expect(lines.map(at)).toEqual([
      'T WARN  source 3f2a9c1e precopy/2 throttle raised percent=40 method="cgroup cpu.max" dest=10.0.0.2:7070',
      'T INFO  source 3f2a9c1e freeze frozen',
      'T INFO  source -        - source agent listening',
    ]);
    expect(lines.join('')).not.toContain(ESC);
  });

  it('shows an error by its message and code, its stack (an unexpected error) on indented lines', () => {
    const { lines, log } = capture({ env: { FERRY_LOG_FORMAT: 'text' } });
    log.error('migration failed', { err: new FerryError('PRECOPY_NOT_CONVERGING', { detail: 'dirty rate 2 GB/s' }) });
    log.error('bug', { err: new TypeError('x is undefined') });
    expect(at(lines[0]!)).toBe(`T ERROR source -        - migration failed code=${ERRORS.PRECOPY_NOT_CONVERGING.code} err="${new FerryError('PRECOPY_NOT_CONVERGING').message}" err.detail="dirty rate 2 GB/s"`);
    const [first, ...stack] = lines[1]!.split('\n');
    expect(first).toContain('err="x is undefined"');
    expect(stack.length).toBeGreaterThan(0);
    expect(stack.every((l) => l.startsWith('    '))).toBe(true);
  });

  it('is what auto picks on a terminal, with colours; JSON off one; never colours with NO_COLOR', () => {
    expect(compileLogOptions({ env: {}, isTTY: true })).toEqual({ level: 'info', format: 'text', colour: true });
    expect(compileLogOptions({ env: {}, isTTY: false })).toEqual({ level: 'info', format: 'json', colour: false });
    expect(compileLogOptions({ env: { NO_COLOR: '1' }, isTTY: true }).colour).toBe(false);
    // An empty NO_COLOR is unset (no-color.org).
    expect(compileLogOptions({ env: { NO_COLOR: '' }, isTTY: true }).colour).toBe(true);
    // JSON on a terminal when asked: never colours in a JSON line.
    expect(compileLogOptions({ env: { FERRY_LOG_FORMAT: 'json' }, isTTY: true })).toEqual({ level: 'info', format: 'json', colour: false });
    const { lines, log } = capture({ isTTY: true });
    log.withContext(() => ({ phase: 'precopy', round: 0 })).warn('coloured');
    expect(lines[0]).toContain(`${ESC}33mWARN `);
    const plain = capture({ isTTY: true, env: { NO_COLOR: '1' } });
    plain.log.warn('plain');
    expect(plain.lines[0]).not.toContain(ESC);
  });

  it('keeps the bounds of the JSON line', () => {
    const { lines, log } = capture({ env: { FERRY_LOG_FORMAT: 'text' } });
    log.info('big', { name: 'x'.repeat(100_000), page: Buffer.alloc(8192) });
    expect(lines[0]!.length).toBeLessThan(2048);
    expect(lines[0]).toContain('page="<8192 bytes>"');
  });
});

describe('the level and the format', () => {
  it('filters below the level, FERRY_LOG_LEVEL over the default', () => {
    const { lines, log } = capture({ env: { FERRY_LOG_LEVEL: 'warn' } });
    log.info('no');
    log.warn('yes');
    expect(parsed(lines).map((r) => r.msg)).toEqual(['yes']);
    expect(compileLogOptions({ env: { FERRY_LOG_LEVEL: 'WARN ' } }).level).toBe('warn');
    // Empty is unset (an EnvironmentFile's FERRY_LOG_LEVEL=).
    expect(compileLogOptions({ env: { FERRY_LOG_LEVEL: '' }, defaultLevel: 'silent' }).level).toBe('silent');
  });

  it.each([
    [{ FERRY_LOG_LEVEL: 'verbose' }, 'LOG_LEVEL_INVALID'],
    [{ FERRY_LOG_LEVEL: 'inf' }, 'LOG_LEVEL_INVALID'],
    [{ FERRY_LOG_FORMAT: 'pretty' }, 'LOG_FORMAT_INVALID'],
    [{ FERRY_LOG_FORMAT: 'JSONL' }, 'LOG_FORMAT_INVALID'],
  ] as const)('refuses %o with %s, never a silent default', (env, key) => {
    const e = expectFerryError(() => compileLogOptions({ env }), key);
    expect(e.hint.length).toBeGreaterThan(0);
    expect(e.code.startsWith('FERRY-00')).toBe(true); // the usage family: exit code 2, nothing touched
  });

  it('refuses a bad default too (a config file value), and createLogger reads the environment', () => {
    expectFerryError(() => compileLogOptions({ env: {}, defaultFormat: 'yaml' }), 'LOG_FORMAT_INVALID');
    vi.stubEnv('FERRY_LOG_LEVEL', 'loud');
    expectFerryError(() => createLogger({ side: 'dest' }, () => undefined), 'LOG_LEVEL_INVALID');
    vi.stubEnv('FERRY_LOG_LEVEL', 'error');
    vi.stubEnv('FERRY_LOG_FORMAT', 'text');
    const lines: string[] = [];
    const log = createLogger({ side: 'dest' }, (l) => lines.push(l), 'info', 'json');
    log.warn('dropped');
    log.error('kept');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ERROR dest/);
  });

  it("gives a test's sink JSON under auto even when stderr is a terminal", () => {
    const tty = process.stderr.isTTY;
    process.stderr.isTTY = true;
    try {
      const lines: string[] = [];
      createLogger({ side: 'dest' }, (l) => lines.push(l)).info('x');
      expect(JSON.parse(lines[0]!)).toMatchObject({ side: 'dest', msg: 'x' });
    } finally {
      process.stderr.isTTY = tty;
    }
  });
});
