/** Quoting CRIU's log in errors, the command lines the runner builds, and finding the criu binary. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { criuLogErrors, formatQuote, MAX_QUOTED_LINE_CHARS, quotableErrorLine, readCriuLogErrors } from '../../shared/criu/criu-log.js';
import { criuDump, criuDumpArgs, criuRestore, criuRestoreArgs } from '../../shared/criu/criu-runner.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { findRepoRoot, parseCriuVersion, probeCriu, versionAtLeast } from '../../shared/criu/criu-binary.js';

// Lines from real CRIU 4.2.1 logs on this project's test host (a dump whose ns init's session leader is
// outside its pid namespace, -v4), cut down.
const DUMP_LOG = `(00.000000) Version: 4.2.1 (gitid 0)
(00.000019) Running on fc Linux 6.18.44-fc-v669 #1 SMP x86_64
(00.037752) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.037790) Loaded kdat cache from /run/criu/criu.kdat
(00.041901) Seized task 8137, state 1
(00.041941) Error (criu/cr-dump.c:1528): A session leader of 8137(1) is outside of its pid namespace
(00.042046) 8137 was stopped
(00.042177) Unfreezing tasks into 1
(00.042196) Error (criu/cr-dump.c:1975): Dumping FAILED.
`;

// A failed restore (pages image missing): errors from the restorer blob carry a "pie: PID:" prefix.
const RESTORE_LOG = `(00.046324) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.051002) pie: 1: Error (criu/pie/restorer.c:1835): Can't read pages data (-9)
(00.051010) pie: 1: Error (criu/pie/restorer.c:2253): Restorer fail 1
(00.051300) Error (criu/cr-restore.c:1258): 18642 exited, status=1
(00.051400) Warn  (criu/cr-restore.c:2300): something worth a warning only
(00.051500) Error (criu/cr-restore.c:2320): Restoring FAILED.`;

describe('criuLogErrors', () => {
  it('quotes the Error lines without their time prefix, leaving out the harmless RLIMIT_NOFILE line', () => {
    expect(criuLogErrors(DUMP_LOG)).toEqual([
      'Error (criu/cr-dump.c:1528): A session leader of 8137(1) is outside of its pid namespace',
      'Error (criu/cr-dump.c:1975): Dumping FAILED.',
    ]);
  });

  it('keeps restorer (pie) errors with their prefix and ignores warnings', () => {
    expect(criuLogErrors(RESTORE_LOG)).toEqual([
      "pie: 1: Error (criu/pie/restorer.c:1835): Can't read pages data (-9)",
      'pie: 1: Error (criu/pie/restorer.c:2253): Restorer fail 1',
      'Error (criu/cr-restore.c:1258): 18642 exited, status=1',
      'Error (criu/cr-restore.c:2320): Restoring FAILED.',
    ]);
  });

  it('handles logs at -v2, which have no time prefix', () => {
    const v2 = "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\nError (criu/mem.c:45): BUG at criu/mem.c:45\n";
    expect(criuLogErrors(v2)).toEqual(['Error (criu/mem.c:45): BUG at criu/mem.c:45']);
  });

  it('cuts a long line (a restore log quotes names from images a peer sent) to MAX_QUOTED_LINE_CHARS', () => {
    const name = 'x'.repeat(100_000);
    const [q] = criuLogErrors(`(00.1) Error (criu/files-reg.c:2100): Can't open file ${name}: No such file\n`);
    expect(q!.length).toBeLessThan(MAX_QUOTED_LINE_CHARS + 40);
    expect(q).toMatch(/^Error \(criu\/files-reg\.c:2100\): Can't open file x+\.\.\. \(\d+ more chars\)$/);
    const short = "Error (criu/mem.c:45): BUG at criu/mem.c:45";
    expect(quotableErrorLine(short)).toBe(short);
  });

  it('a successful run quotes nothing', () => {
    const ok = DUMP_LOG.split('\n').filter((l) => !/cr-dump\.c/.test(l)).join('\n');
    expect(criuLogErrors(ok)).toEqual([]);
    expect(quotableErrorLine("(00.1) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted")).toBeUndefined();
  });
});

describe('readCriuLogErrors and formatQuote', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-criu-log-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('streams a log file to the same lines', async () => {
    const file = join(dir, 'dump.log');
    writeFileSync(file, DUMP_LOG);
    expect(await readCriuLogErrors(file)).toEqual(criuLogErrors(DUMP_LOG));
  });

  it('names the log and shortens long quotes to the first lines and the last two', () => {
    expect(formatQuote(['Error (a): one'], '/x/dump.log')).toEqual(['  Error (a): one', 'log: /x/dump.log']);
    const many = Array.from({ length: 30 }, (_, i) => `Error (f.c:${i}): line ${i}`);
    const q = formatQuote(many, '/x/dump.log');
    expect(q).toHaveLength(14); // 10 first, the marker, 2 last, the log
    expect(q[0]).toBe('  Error (f.c:0): line 0');
    expect(q[10]).toBe('  ... 18 more Error lines ...');
    expect(q.slice(-3)).toEqual(['  Error (f.c:28): line 28', '  Error (f.c:29): line 29', 'log: /x/dump.log']);
  });
});

describe('criu command lines', () => {
  it('dump: tree root, absolute paths, leave-stopped by default, no --shell-job', () => {
    const args = criuDumpArgs({ criu: '/c', pid: 4242, imagesDir: 'rel/img', logFile: 'rel/dump.log' });
    expect(args.slice(0, 3)).toEqual(['dump', '-t', '4242']);
    expect(args[args.indexOf('-D') + 1]).toBe(join(process.cwd(), 'rel/img'));
    expect(args[args.indexOf('-o') + 1]).toBe(join(process.cwd(), 'rel/dump.log'));
    expect(args).toContain('-v4');
    expect(args).toContain('--leave-stopped');
    expect(args).not.toContain('--shell-job');
    expect(args).not.toContain('--tcp-established');
  });

  it('dump: options map to flags', () => {
    const args = criuDumpArgs({ criu: '/c', pid: 7, imagesDir: '/i', logFile: '/l', leaveStopped: false, tcpEstablished: true, fileLocks: true, extraArgs: ['--ghost-limit', '8M'] });
    expect(args).not.toContain('--leave-stopped');
    expect(args).toEqual(expect.arrayContaining(['--tcp-established', '--file-locks']));
    expect(args.slice(-2)).toEqual(['--ghost-limit', '8M']);
    expect(() => criuDumpArgs({ criu: '/c', pid: 1, imagesDir: '/i', logFile: '/l' })).toThrow(RangeError);
  });

  it('restore: detached, pidfile, leave-stopped, -v3 by default', () => {
    const args = criuRestoreArgs({ criu: '/c', imagesDir: '/i', logFile: '/i/restore.log', pidFile: 'p.pid', timeoutMs: 1000 });
    expect(args[0]).toBe('restore');
    expect(args).toEqual(expect.arrayContaining(['-d', '--leave-stopped', '-v3', '-D', '/i', '-o', '/i/restore.log']));
    expect(args[args.indexOf('--pidfile') + 1]).toBe(join(process.cwd(), 'p.pid'));
  });
});

describe('criu runner without criu', () => {
  it('a criu binary that cannot be started is CRIU_DUMP_FAILED / CRIU_RESTORE_FAILED, not a bare error', async () => {
    const missing = '/nonexistent/criu';
    await expect(criuDump({ criu: missing, pid: 4242, imagesDir: '/tmp', logFile: '/tmp/x.log' })).rejects.toSatisfy(
      (e: unknown) => e instanceof FerryError && e.key === 'CRIU_DUMP_FAILED' && /cannot run \/nonexistent\/criu/.test(e.detail ?? ''),
    );
    const pidFile = join(mkdtempSync(join(tmpdir(), 'ferry-criu-pid-')), 'r.pid');
    await expect(criuRestore({ criu: missing, imagesDir: '/tmp', logFile: '/tmp/x.log', pidFile, timeoutMs: 1000 })).rejects.toSatisfy(
      (e: unknown) => e instanceof FerryError && e.key === 'CRIU_RESTORE_FAILED',
    );
    rmSync(dirname(pidFile), { recursive: true });
  });

  it('an already aborted signal never starts criu: CANCELLED, or the FerryError that aborted it', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(criuDump({ criu: '/nonexistent/criu', pid: 4242, imagesDir: '/tmp', logFile: '/tmp/x.log', signal: ac.signal })).rejects.toSatisfy(
      (e: unknown) => e instanceof FerryError && e.key === 'CANCELLED',
    );
    const lease = new AbortController();
    const why = new FerryError('FREEZE_LEASE_EXPIRED');
    lease.abort(why);
    await expect(criuDump({ criu: '/nonexistent/criu', pid: 4242, imagesDir: '/tmp', logFile: '/tmp/x.log', signal: lease.signal })).rejects.toBe(why);
  });
});

describe('criu binary', () => {
  it('parses `criu --version`', () => {
    expect(parseCriuVersion('Version: 4.2.1\n')).toEqual({ major: 4, minor: 2, patch: 1, text: '4.2.1' });
    expect(parseCriuVersion('Version: 4.2\nGitID: v4.2-12-gabc\n')).toEqual({ major: 4, minor: 2, patch: 0, text: '4.2' });
    expect(parseCriuVersion('criu: command not found')).toBeUndefined();
    expect(versionAtLeast(parseCriuVersion('Version: 4.1.1')!, { major: 4, minor: 2 })).toBe(false);
    expect(versionAtLeast(parseCriuVersion('Version: 5.0')!, { major: 4, minor: 2 })).toBe(true);
  });

  it('finds the repository root from this file and from a nested directory', () => {
    const root = findRepoRoot();
    expect(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))).toMatchObject({ name: 'ferry' });
    expect(findRepoRoot(join(root, 'dist', 'shared', 'criu'))).toBe(root);
  });

  it('probe never throws: a criu that does not run, and a bad FERRY_CRIU, are reasons', async () => {
    const bad = await probeCriu({ criu: '/nonexistent/criu' });
    expect(bad).toMatchObject({ ok: false });
    if (!bad.ok) expect(bad.reason).toMatch(/\/nonexistent\/criu does not run/);
    const saved = process.env.FERRY_CRIU;
    process.env.FERRY_CRIU = '/bin/false';
    try {
      const viaEnv = await probeCriu();
      expect(viaEnv).toMatchObject({ ok: false });
      if (!viaEnv.ok) expect(viaEnv.reason).toMatch(/FERRY_CRIU=\/bin\/false is not a working criu/);
    } finally {
      if (saved === undefined) delete process.env.FERRY_CRIU;
      else process.env.FERRY_CRIU = saved;
    }
  });
});
