/** The command layer's pure parts: migrate options, addresses, the listen policy, flags, rendering, rollback. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { intFlag, msFlag, parse } from '../../cli/args.js';
import { describeEvent, formatError, formatSummary } from '../../cli/render.js';
import { transportSecurityFromFlags } from '../../cli/tls-flags.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { formatHostPort, isLoopback, parseHostPort } from '../../shared/transport/address.js';
import { checkListenPolicy } from '../../shared/transport/listen-policy.js';
import { INSECURE_LOOPBACK, type TransportSecurity } from '../../shared/transport/transport-security.js';
import type { MigrationEvent, MigrationSummary } from '../../source-agent/migration/events.js';
import { compileMigrateOptions, type MigrateOptions } from '../../source-agent/config/migrate-options.js';
import { RollbackStack } from '../../source-agent/migration/rollback-stack.js';
import { expectFerryError } from '../support/ferry-error-expect.js';

describe('compileMigrateOptions', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('fills in the defaults', () => {
    vi.stubEnv('FERRY_IMAGES_DIR', '/tmp/ferry-images');
    vi.stubEnv('FERRY_STATE_DIR', undefined);
    vi.stubEnv('FERRY_DUMP', undefined);
    expect(compileMigrateOptions({ pid: 42, to: '10.0.0.2:7070' })).toEqual({
      pid: 42,
      to: '10.0.0.2:7070',
      maxRounds: 10,
      maxDowntimeMs: 300,
      floorPages: 64,
      freezeTimeoutMs: 120_000,
      restoreTimeoutMs: 120_000,
      windowBytes: 16 * 1024 * 1024,
      imagesRoot: '/tmp/ferry-images',
      connectTimeoutMs: 5_000,
      bandwidthBytesPerSecond: undefined,
      onNoConverge: 'throttle',
      noPrecopy: false,
      tracker: 'auto',
      dumpMode: 'auto',
      costModelPath: '/var/lib/ferry/source/cost-model.json',
      taskLocksDir: '/var/lib/ferry/source/locks',
      journalDir: '/var/lib/ferry/source/journal',
      commitPatienceMs: 300_000,
      undeliveredPatienceMs: 10_000,
      restore: 'auto',
      postCopy: 'off',
      criuFeatures: { fileLocks: 'auto', tcpEstablished: 'auto' },
      allow: [],
      compress: 'auto',
      compressLevel: 1,
      pageChannels: 1,
    });
  });

  it('--compress is auto, off or zstd (issue 15)', () => {
    const compile = (compress: string) => compileMigrateOptions({ pid: 42, to: 'h:1', compress });
    expect(compile('off').compress).toBe('off');
    expect(compile('zstd').compress).toBe('zstd');
    expectFerryError(() => compile('lz4'), 'BAD_ARGUMENT');
    expectFerryError(() => compile(''), 'BAD_ARGUMENT');
  });

  it('--page-channels takes 0 (the gRPC stream) to 16, and refuses anything else (BAD_ARGUMENT)', () => {
    const compile = (pageChannels: number): number => compileMigrateOptions({ pid: 42, to: 'h:1', pageChannels }).pageChannels;
    expect([0, 1, 4, 16].map(compile)).toEqual([0, 1, 4, 16]);
    for (const bad of [-1, 17, 1.5, Number.NaN]) expectFerryError(() => compile(bad), 'BAD_ARGUMENT');
  });

  describe('--post-copy and --on-no-converge (issue 12)', () => {
    const compile = (o: Partial<MigrateOptions>) => compileMigrateOptions({ pid: 42, to: 'h:1', ...o });
    it('post-copy is off by default; auto and always make the no-converge action postcopy', () => {
      expect(compile({})).toMatchObject({ postCopy: 'off', onNoConverge: 'throttle' });
      expect(compile({ postCopy: 'auto' })).toMatchObject({ postCopy: 'auto', onNoConverge: 'postcopy' });
      expect(compile({ postCopy: 'always', onNoConverge: 'postcopy' })).toMatchObject({ postCopy: 'always', onNoConverge: 'postcopy' });
      expect(compile({ postCopy: 'off', onNoConverge: 'freeze' })).toMatchObject({ postCopy: 'off', onNoConverge: 'freeze' });
    });
    it('--on-no-converge postcopy alone means --post-copy auto', () => {
      expect(compile({ onNoConverge: 'postcopy' })).toMatchObject({ postCopy: 'auto', onNoConverge: 'postcopy' });
      expect(compile({ onNoConverge: 'postcopy', restore: 'lazy' })).toMatchObject({ postCopy: 'auto', restore: 'lazy' });
    });
    it.each<[string, Partial<MigrateOptions>]>([
      ['--post-copy off --on-no-converge postcopy', { postCopy: 'off', onNoConverge: 'postcopy' }],
      ['--post-copy auto --on-no-converge throttle', { postCopy: 'auto', onNoConverge: 'throttle' }],
      ['--post-copy always --on-no-converge freeze', { postCopy: 'always', onNoConverge: 'freeze' }],
      ['--post-copy auto --on-no-converge abort', { postCopy: 'auto', onNoConverge: 'abort' }],
      ['--post-copy auto --restore eager', { postCopy: 'auto', restore: 'eager' }],
      ['--on-no-converge postcopy --restore eager', { onNoConverge: 'postcopy', restore: 'eager' }],
      ['--post-copy always --no-precopy', { postCopy: 'always', noPrecopy: true }],
      ['--post-copy sometimes', { postCopy: 'sometimes' }],
      ['--on-no-converge pray', { onNoConverge: 'pray' as MigrateOptions['onNoConverge'] }],
    ])('refuses %s with BAD_ARGUMENT (exit 2, nothing touched)', (_name, o) => {
      const e = expectFerryError(() => compile(o), 'BAD_ARGUMENT');
      expect(e.hint.length).toBeGreaterThan(10);
    });
    it('ferry migrate parses --post-copy and refuses a contradiction before it dials anything', async () => {
      const { migrateCommand, MIGRATE_HELP } = await import('../../cli/commands/migrate.js');
      expect(MIGRATE_HELP).toContain('--post-copy WHEN');
      expect(MIGRATE_HELP).toContain('ORIGINAL_LOST');
      await expect(migrateCommand(['42', '--to', '127.0.0.1:9', '--post-copy', 'off', '--on-no-converge', 'postcopy'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
      await expect(migrateCommand(['42', '--to', '127.0.0.1:9', '--post-copy', 'auto', '--restore', 'eager'])).rejects.toMatchObject({ key: 'BAD_ARGUMENT' });
    });
    it('--post-copy off goes with --restore eager and --no-precopy as before', () => {
      expect(compile({ postCopy: 'off', restore: 'eager', noPrecopy: true })).toMatchObject({ postCopy: 'off', restore: 'eager', noPrecopy: true });
    });
  });

  it('takes --restore auto, lazy or eager and refuses anything else (issue 11)', () => {
    for (const v of ['auto', 'lazy', 'eager'] as const) expect(compileMigrateOptions({ pid: 42, to: 'h:1', restore: v }).restore).toBe(v);
    expectFerryError(() => compileMigrateOptions({ pid: 42, to: 'h:1', restore: 'lazyish' }), 'BAD_ARGUMENT');
  });

  it('reads the environment once, at compile time, and refuses what it cannot mean', () => {
    vi.stubEnv('FERRY_STATE_DIR', '/srv/ferry');
    vi.stubEnv('FERRY_DUMP', 'full');
    expect(compileMigrateOptions({ pid: 42, to: 'h:1' })).toMatchObject({ dumpMode: 'full', costModelPath: '/srv/ferry/source/cost-model.json', journalDir: '/srv/ferry/source/journal' });
    vi.stubEnv('FERRY_DUMP', 'lazy-please');
    expectFerryError(() => compileMigrateOptions({ pid: 42, to: 'h:1' }), 'BAD_ARGUMENT');
  });

  it('puts the images on tmpfs by default on Linux', () => {
    vi.stubEnv('FERRY_IMAGES_DIR', undefined);
    expect(compileMigrateOptions({ pid: 42, to: 'h:1' }).imagesRoot).toBe(process.platform === 'linux' ? '/dev/shm/ferry' : expect.any(String));
  });

  it('keeps the values it is given, and normalizes the address', () => {
    const o = compileMigrateOptions({
      pid: 4194304,
      to: '[::1]:7070',
      maxRounds: 100,
      maxDowntimeMs: 1,
      floorPages: 1,
      freezeTimeoutMs: 3_600_000,
      restoreTimeoutMs: 5,
      windowBytes: 65536,
      imagesRoot: '/x',
      connectTimeoutMs: 600_000,
    });
    expect(o).toMatchObject({ pid: 4194304, to: '[::1]:7070', maxRounds: 100, maxDowntimeMs: 1, windowBytes: 65536, imagesRoot: '/x' });
  });

  const base: MigrateOptions = { pid: 42, to: '127.0.0.1:7070' };
  const invalid: { name: string; opts: Partial<MigrateOptions> }[] = [
    { name: 'pid 0', opts: { pid: 0 } },
    { name: 'a negative pid', opts: { pid: -1 } },
    { name: 'a fractional pid', opts: { pid: 1.5 } },
    { name: 'a pid above pid_max', opts: { pid: 4194305 } },
    { name: 'pid NaN', opts: { pid: NaN } },
    { name: 'max rounds 0', opts: { maxRounds: 0 } },
    { name: 'max rounds 101', opts: { maxRounds: 101 } },
    { name: 'max rounds 2.5', opts: { maxRounds: 2.5 } },
    { name: 'max downtime 0', opts: { maxDowntimeMs: 0 } },
    { name: 'max downtime of 11 minutes', opts: { maxDowntimeMs: 660_000 } },
    { name: 'floor pages 0', opts: { floorPages: 0 } },
    { name: 'freeze timeout 0', opts: { freezeTimeoutMs: 0 } },
    { name: 'freeze timeout over an hour', opts: { freezeTimeoutMs: 3_600_001 } },
    { name: 'restore timeout negative', opts: { restoreTimeoutMs: -5 } },
    { name: 'window 0', opts: { windowBytes: 0 } },
    { name: 'window over 1 GiB', opts: { windowBytes: 2 ** 30 + 1 } },
    { name: 'connect timeout Infinity', opts: { connectTimeoutMs: Infinity } },
  ];
  it.each(invalid)('refuses $name with BAD_ARGUMENT', ({ opts }) => {
    expectFerryError(() => compileMigrateOptions({ ...base, ...opts }), 'BAD_ARGUMENT');
  });

  it('refuses a bad --to address with BAD_ADDRESS', () => {
    expectFerryError(() => compileMigrateOptions({ ...base, to: 'nohostport' }), 'BAD_ADDRESS');
  });
});

describe('addresses', () => {
  it.each([
    { text: '127.0.0.1:7070', host: '127.0.0.1', port: 7070, back: '127.0.0.1:7070' },
    { text: 'dest.example:1', host: 'dest.example', port: 1, back: 'dest.example:1' },
    { text: '[::1]:7070', host: '::1', port: 7070, back: '[::1]:7070' },
    { text: '[fd00::2]:65535', host: 'fd00::2', port: 65535, back: '[fd00::2]:65535' },
    { text: '[::ffff:10.0.0.2]:80', host: '::ffff:10.0.0.2', port: 80, back: '[::ffff:10.0.0.2]:80' },
  ])('parses $text', ({ text, host, port, back }) => {
    expect(parseHostPort(text)).toEqual({ host, port });
    expect(formatHostPort({ host, port })).toBe(back);
  });

  it('takes port 0 only for a listen address', () => {
    expect(parseHostPort('localhost:0', '--listen address', { allowPortZero: true })).toEqual({ host: 'localhost', port: 0 });
    expectFerryError(() => parseHostPort('localhost:0', '--to address'), 'BAD_ADDRESS');
  });

  it.each(['[.]:80', '[:]:80', 'a/b@c:80', '', '7070', ':7070', 'host', 'host:', 'host:port', 'host:65536', 'host:-1', '::1:7070', '[::1]', '[::1]7070', '[zz::1]:80', 'a b:80', 'host:70 70', ' host:80'])(
    'refuses %j with BAD_ADDRESS',
    (text) => {
      const e = expectFerryError(() => parseHostPort(text, '--to address'), 'BAD_ADDRESS');
      expect(e.message).toContain('--to address');
    },
  );

  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['::1', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.2', false],
    ['128.0.0.1', false],
    ['127.0.0.1.example', false],
    ['localhost.example', false],
  ] as const)('isLoopback(%s) is %s', (host, want) => {
    expect(isLoopback(host)).toBe(want);
  });
});

describe('checkListenPolicy', () => {
  const tls = { kind: 'tls' } as TransportSecurity; // the policy reads only the kind
  it.each(['127.0.0.1', '::1', 'localhost'])('lets %s listen, in plaintext too', (host) => {
    expect(() => checkListenPolicy({ host, port: 7070 }, undefined)).not.toThrow();
    expect(() => checkListenPolicy({ host, port: 7070 }, INSECURE_LOOPBACK)).not.toThrow();
  });

  it.each(['0.0.0.0', '10.0.0.2', '::'])('refuses plaintext on %s without --insecure-any-address; TLS listens anywhere', (host) => {
    const e = expectFerryError(() => checkListenPolicy({ host, port: 7070 }, undefined), 'INSECURE_LISTEN_REFUSED');
    expect(e.detail).toContain(formatHostPort({ host, port: 7070 }));
    expectFerryError(() => checkListenPolicy({ host, port: 7070 }, INSECURE_LOOPBACK), 'INSECURE_LISTEN_REFUSED');
    expect(() => checkListenPolicy({ host, port: 7070 }, { kind: 'insecure', anyAddress: true })).not.toThrow();
    expect(() => checkListenPolicy({ host, port: 7070 }, tls)).not.toThrow();
  });
});

describe('transport security flags', () => {
  it.each([
    [{ 'insecure-listen': '10.0.0.2' }, 'BAD_ARGUMENT', 'the old flag: refused with a pointer to the new ones'],
    [{ insecure: true, 'tls-cert': '/x.pem' }, 'BAD_ARGUMENT', 'plaintext and TLS at once'],
    [{ insecure: true, 'allow-peer': ['spiffe://td/ferry/a'] }, 'BAD_ARGUMENT', 'an allow-list without authentication'],
    [{ 'insecure-any-address': true }, 'BAD_ARGUMENT', 'plaintext never implied'],
    [{ 'allow-peer': ['not an id'], 'tls-cert': '/nonexistent' }, 'TLS_FILES_MISSING', 'the files are read first'],
  ] as const)('%j: %s (%s)', (values, key, _why) => {
    let thrown: unknown;
    try {
      transportSecurityFromFlags(values, ['server']);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(FerryError);
    expect((thrown as FerryError).key).toBe(key);
  });

  it('--insecure alone is plaintext on loopback', () => {
    expect(transportSecurityFromFlags({ insecure: true }, ['client'])).toEqual(INSECURE_LOOPBACK);
    expect(transportSecurityFromFlags({ insecure: true, 'insecure-any-address': true }, ['server'])).toEqual({ kind: 'insecure', anyAddress: true });
  });
});

describe('flags', () => {
  it.each([
    ['300', 300],
    ['300ms', 300],
    ['2s', 2000],
    ['1.5s', 1500],
    ['2m', 120_000],
    ['0.5m', 30_000],
    ['0', 0],
  ] as const)('msFlag(%s) is %d ms', (text, ms) => {
    expect(msFlag('max-downtime', text)).toBe(ms);
  });

  it.each(['', 'abc', '-1', '1h', '1.5.s', '2 s', 's', '.5s', '1e3'])('msFlag refuses %j', (text) => {
    const e = expectFerryError(() => msFlag('max-downtime', text), 'BAD_ARGUMENT');
    expect(e.message).toContain('--max-downtime');
  });

  it.each([
    ['10', 10],
    ['0', 0],
    ['007', 7],
  ] as const)('intFlag(%s) is %d', (text, n) => {
    expect(intFlag('max-rounds', text)).toBe(n);
  });

  it.each(['', '-3', '1.5', '1e3', '0x10', 'ten', ' 1'])('intFlag refuses %j', (text) => {
    const e = expectFerryError(() => intFlag('max-rounds', text), 'BAD_ARGUMENT');
    expect(e.message).toContain('--max-rounds');
  });

  it('passes an absent flag through', () => {
    expect(msFlag('x', undefined)).toBeUndefined();
    expect(intFlag('x', undefined)).toBeUndefined();
  });

  it('parse turns unknown options and missing values into BAD_ARGUMENT', () => {
    const opts = { to: { type: 'string' } } as const;
    expect(parse(['--to', 'h:1'], opts).values.to).toBe('h:1');
    expect(parse(['-h'], opts).values.help).toBe(true);
    expectFerryError(() => parse(['--nope'], opts), 'BAD_ARGUMENT');
    expectFerryError(() => parse(['--to'], opts), 'BAD_ARGUMENT');
    expectFerryError(() => parse(['42'], opts), 'BAD_ARGUMENT');
    expect(parse(['42'], opts, true).positionals).toEqual(['42']);
  });
});

describe('rendering', () => {
  const summary: MigrationSummary = {
    migrationId: '0b9e4c4e-5d0f-4e43-9d57-3a1f0c7f2a11',
    pid: 4242,
    dest: '10.0.0.2:7070',
    tracker: 'hash',
    tasks: 3,
    rounds: [
      { round: 0, presentPages: 65536, dirtyPages: 65536, zeroPages: 1000, bytesSent: 264 * 2 ** 20, bytesRead: 264 * 2 ** 20, durationMs: 2500, transferMs: 2400, throttlePercent: 0, codec: 'none', wireBytes: 264 * 2 ** 20 },
      { round: 1, presentPages: 65600, dirtyPages: 1200, zeroPages: 0, bytesSent: 1200 * 4096, bytesRead: 256 * 2 ** 20, durationMs: 40, transferMs: 30, throttlePercent: 0, codec: 'none', wireBytes: 1200 * 4096 },
    ],
    decision: 'freezing: the dirty set (4.7 MiB) sends in ~47 ms <= 300 ms budget',
    presentPages: 65536,
    pagesSent: 67000,
    pageBytesSent: 270 * 2 ** 20,
    finalDeltaPages: 264,
    dumpPages: 65700,
    imageBytesSent: 300 * 1024,
    totalMs: 12_345,
    downtimeMs: 187.4,
    phases: { dumpMs: 60, finalDeltaMs: 30, rebuildMs: 20, restoreMs: 70, commitMs: 7.4 },
    restoredPid: 777,
    throttle: undefined,
    dumpKind: 'lazy',
    finalDeltaTaskPages: 0,
    restoreMode: 'lazy',
    fillMs: 420,
    fillFaults: 31,
    fillFaultsWaited: 4,
    replacedPages: 1,
    confirmedPages: 900,
    filledPages: 1000,
    pagerFillUs: 2000,
    postCopy: 'always',
    postCopied: true,
    precopyBytes: 1000,
    downtimeBytes: 200,
    postcopyBytes: 300,
    remotePages: 7,
    faultWaitP50Us: 40,
    faultWaitP99Us: 900,
    originalExitMs: 12,
    originalLeft: [],
    compress: 'auto',
    pageCodec: 'zstd',
    pageWireBytes: 100,
  };

  it('formatSummary shows the key figures', () => {
    const text = formatSummary(summary);
    for (const piece of [
      'pid 4242',
      '10.0.0.2:7070',
      'restored pid 777',
      'rounds      2 (freezing: the dirty set',
      '65536 present at round 0',
      '67000 sent',
      '264 in the final delta of 65700 dumped',
      '270 MiB of pages',
      '300 KiB of images',
      '12.3 s',
      'downtime    187 ms',
      'dump 60 ms',
      'lazy restore 70 ms',
      'fill        420 ms after the resume: 31 faults (4 waited for a confirmation), 900 pages confirmed against the original, 1 replaced',
      'final delta 30 ms',
      'rebuild 20 ms',
      'restore 70 ms',
      'commit 7 ms',
    ]) {
      expect(text).toContain(piece);
    }
  });

  it('formatSummary splits the bytes by phase and, after a post-copy, says what came after the resume (issue 12)', () => {
    const big = { ...summary, dumpPages: 1000, precopyBytes: 4096 * 1000, downtimeBytes: 2 ** 20, postcopyBytes: 300 * 4096, remotePages: 300, faultWaitP50Us: 420, faultWaitP99Us: 12_300 };
    const text = formatSummary(big);
    expect(text).toContain('bytes: pre-copy 3.9 MiB, downtime 1.0 MiB, post-copy 1.2 MiB = 1.56 x RSS');
    expect(text).toContain('post-copy: 300 pages after the resume, 4 faults waited (p50 0.42 ms, p99 12 ms)');
    const notPostCopied = formatSummary({ ...big, postCopied: false });
    expect(notPostCopied).toContain('bytes: pre-copy');
    expect(notPostCopied).not.toContain('post-copy:');
  });

  it('formatSummary copes with missing phase times', () => {
    expect(formatSummary({ ...summary, phases: {} })).toContain('dump 0 ms');
  });

  it('describeEvent says what happened', () => {
    const round = summary.rounds[1]!;
    const lines: [MigrationEvent, string[]][] = [
      [{ kind: 'started', migrationId: 'm-1', pid: 4242, dest: '10.0.0.2:7070', tasks: 3, tracker: 'hash', trackerNote: 'hash tracker (as asked)' }, ['pid 4242', '3 processes', '10.0.0.2:7070', 'hash', 'm-1']],
      [{ kind: 'started', migrationId: 'm-1', pid: 1, dest: 'd:1', tasks: 1, tracker: 'hash', trackerNote: 'hash tracker (as asked)' }, ['(1 process)']],
      [{ kind: 'phase', phase: 'final-delta' }, ['phase: final-delta']],
      [
        { kind: 'round', round, pagesSent: 66736, bytesSent: 269 * 2 ** 20, rateBytesPerSecond: 110 * 2 ** 20 },
        ['round 1', '1200 dirty of 65600 present', '4.7 MiB in 40 ms', '110 MiB/s', 'total 269 MiB'],
      ],
      [
        {
          kind: 'decision',
          action: 'freeze',
          rule: 'budget',
          message: summary.decision,
          expectedDowntimeMs: 250,
          dirtyRateBytesPerSecond: 1,
          transferRateBytesPerSecond: 2,
          fixedCostMs: 200,
          throttlePercent: 0,
          remainingBytes: 4096,
        },
        [summary.decision],
      ],
    ];
    for (const [event, pieces] of lines) {
      const text = describeEvent(event);
      for (const p of pieces) expect(text, event.kind).toContain(p);
    }
    expect(describeEvent({ kind: 'done', summary })).toBeUndefined();
    expect(describeEvent({ kind: 'failed', phase: 'precopy', error: new FerryError('INTERNAL').toJSON() })).toBeUndefined();
  });

  it('formatError shows code, message, detail, source state, rollback errors and hint', () => {
    const e = new FerryError('CRIU_DUMP_FAILED', { phase: 'freeze', side: 'source', sourceState: 'unknown', detail: 'Error (cr-dump.c:1): x\nsee /var/log/dump.log' });
    e.rollbackErrors.push(new Error('rollback step "thaw the original" failed: ESRCH'));
    const text = formatError(e);
    expect(text.split('\n')[0]).toBe(`ferry: FERRY-4001: ${e.message}`);
    expect(text).toContain('  detail: Error (cr-dump.c:1): x\n          see /var/log/dump.log');
    expect(text).toContain('the task on the source: unknown');
    expect(text).toContain('rollback: rollback step "thaw the original" failed: ESRCH');
    expect(text.split('\n').at(-1)).toBe(`  hint: ${e.hint}`);

    // The same from its serialized form (as it arrives in a 'failed' event).
    expect(formatError(e.toJSON())).toBe(text);
  });

  it('formatError leaves out what is not known', () => {
    const text = formatError(new FerryError('BAD_ADDRESS'));
    expect(text).not.toContain('detail:');
    expect(text).not.toContain('the task on the source');
    expect(text).not.toContain('rollback:');
    expect(text.split('\n')).toHaveLength(2);
  });
});

describe('RollbackStack', () => {
  it('runs the undo steps in reverse order', async () => {
    const ran: string[] = [];
    const rb = new RollbackStack();
    rb.push('a', () => {
      ran.push('a');
    });
    rb.push('b', async () => {
      await Promise.resolve();
      ran.push('b');
    });
    rb.push('c', () => {
      ran.push('c');
    });
    expect(rb.pending).toEqual(['a', 'b', 'c']);
    expect(await rb.run()).toEqual([]);
    expect(ran).toEqual(['c', 'b', 'a']);
    expect(rb.pending).toEqual([]);
  });

  it('goes on past a failing step and returns every error, naming the step', async () => {
    const ran: string[] = [];
    const rb = new RollbackStack();
    const cause = new Error('ESRCH');
    rb.push('close the tracker', () => {
      ran.push('tracker');
    });
    rb.push('thaw the original', () => {
      throw cause;
    });
    rb.push('abort the dest session', () => Promise.reject(new Error('UNAVAILABLE')));
    rb.push('remove the images', () => {
      ran.push('images');
    });
    const errors = await rb.run();
    expect(ran).toEqual(['images', 'tracker']);
    expect(errors).toHaveLength(2);
    expect(errors[0]!.message).toContain('abort the dest session');
    expect(errors[0]!.message).toContain('UNAVAILABLE');
    expect(errors[1]!.message).toContain('thaw the original');
    expect(errors[1]!.cause).toBe(cause);
  });

  it('a released handle removes its step that became permanent, and only that one', async () => {
    const ran: string[] = [];
    const rb = new RollbackStack();
    const handles = ['tracker', 'session', 'thaw', 'thaw'].map((what, i) =>
      rb.push(what, () => {
        ran.push(`${what}${i}`);
      }),
    );
    handles[2]!.release();
    handles[1]!.release();
    handles[1]!.release(); // twice is harmless
    expect(rb.pending).toEqual(['tracker', 'thaw']);
    await rb.run();
    // Two steps with the same words are still two steps: releasing one leaves the other.
    expect(ran).toEqual(['thaw3', 'tracker0']);
  });

  it('runs each step once: a second run has nothing to do', async () => {
    let n = 0;
    const rb = new RollbackStack();
    rb.push('x', () => {
      n++;
    });
    await rb.run();
    expect(await rb.run()).toEqual([]);
    expect(n).toBe(1);
  });
});
