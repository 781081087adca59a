/** The error registry, FerryError, its gRPC round trip and the CLI exit codes. */
import { Metadata, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor } from '../../cli/exit-codes.js';
import { ERRORS, RETIRED_CODES, keyForCode, type ErrorKey } from '../../shared/errors/codes.js';
import { asFerryError, FerryError, isFerryError, SystemCallError, type SerializedFerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError, toStatus } from '../../shared/errors/grpc-status.js';
import { PHASES } from '../../shared/phases.js';

const KEYS = Object.keys(ERRORS) as ErrorKey[];
/** The first digit of a code, as codes.ts documents it: 1-8 are the phases in order. */
const FAMILIES: Record<string, string> = {
  '0': 'usage',
  '1': 'negotiate',
  '2': 'prepare',
  '3': 'precopy',
  '4': 'freeze',
  '5': 'final-delta',
  '6': 'restore',
  '7': 'commit',
  '8': 'rollback',
  '9': 'internal',
};

/** What a client sees of a failed call: the status that toStatus built, as grpc-js hands it over. */
function asServiceError(s: Partial<StatusObject>): ServiceError {
  return Object.assign(new Error(`${s.code} ${s.details}`), { code: s.code!, details: s.details!, metadata: s.metadata! });
}

const roundTrip = (e: unknown, fallback = new FerryError('PAGE_STREAM_FAILED')): FerryError => fromServiceError(asServiceError(toStatus(e)), fallback);

describe('the registry', () => {
  it.each(KEYS)('%s has a code FERRY-dddd of a known family, a title, a hint and a gRPC status', (key) => {
    const s = ERRORS[key];
    expect(s.code).toMatch(/^FERRY-\d{4}$/);
    expect(FAMILIES[s.code.charAt(6)]).toBeDefined();
    expect(s.title.trim()).not.toBe('');
    expect(s.hint.trim()).not.toBe('');
    expect(Object.values(status)).toContain(s.grpc);
    expect(s.grpc).not.toBe(status.OK);
    expect(keyForCode(s.code)).toBe(key);
  });

  it('has unique codes', () => {
    const codes = KEYS.map((k) => ERRORS[k].code);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('numbers the phase families in the order of the phases', () => {
    // The fill is the commit's second half: its errors are in the commit family (FILL_FAILED is FERRY-7005).
    PHASES.filter((p) => p !== 'fill').forEach((phase, i) => expect(FAMILIES[String(i + 1)]).toBe(phase));
  });

  it('keeps every published code (codes are never renumbered or reused)', () => {
    const published: Partial<Record<ErrorKey, string>> = {
      BAD_ARGUMENT: 'FERRY-0001',
      BAD_ADDRESS: 'FERRY-0002',
      INSECURE_LISTEN_REFUSED: 'FERRY-0003',
      NOT_ROOT: 'FERRY-0004',
      TASK_NOT_FOUND: 'FERRY-1001',
      TASK_PIDS_TAKEN_ON_DEST: 'FERRY-1005',
      DEST_UNREACHABLE: 'FERRY-1006',
      DEST_NO_CRIU: 'FERRY-1007',
      PROTOCOL_MISMATCH: 'FERRY-1008',
      PLATFORM_MISMATCH: 'FERRY-1011',
      DEST_PREPARE_FAILED: 'FERRY-2001',
      SESSION_CONFLICT: 'FERRY-2002',
      PAGE_STREAM_FAILED: 'FERRY-3002',
      PAGE_INTEGRITY: 'FERRY-3004',
      CRIU_DUMP_FAILED: 'FERRY-4001',
      IMAGE_INVALID: 'FERRY-5002',
      REBUILD_PAGE_MISSING: 'FERRY-6001',
      REBUILD_HASH_MISMATCH: 'FERRY-6002',
      COMMIT_UNCONFIRMED: 'FERRY-7001',
      COMMIT_REJECTED: 'FERRY-7002',
      INTERNAL: 'FERRY-9001',
      CANCELLED: 'FERRY-9002',
      SESSION_NOT_FOUND: 'FERRY-9003',
    };
    for (const [key, code] of Object.entries(published)) expect(ERRORS[key as ErrorKey].code, key).toBe(code);
    // A withdrawn code is never handed to another error.
    for (const s of Object.values(ERRORS)) expect(RETIRED_CODES).not.toContain(s.code);
  });

  it('does not know codes outside the registry', () => {
    expect(keyForCode('FERRY-9999')).toBeUndefined();
    expect(keyForCode('')).toBeUndefined();
  });
});

describe('FerryError', () => {
  it('carries the registry entry and the init fields', () => {
    const cause = new Error('EIO');
    const e = new FerryError('REBUILD_HASH_MISMATCH', { phase: 'restore', side: 'dest', sourceState: 'frozen', detail: 'page 7', cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('FerryError');
    expect(e.key).toBe('REBUILD_HASH_MISMATCH');
    expect(e.code).toBe('FERRY-6002');
    expect(e.message).toBe(ERRORS.REBUILD_HASH_MISMATCH.title);
    expect(e.hint).toBe(ERRORS.REBUILD_HASH_MISMATCH.hint);
    expect(e.retryable).toBe(true);
    expect(e).toMatchObject({ phase: 'restore', side: 'dest', sourceState: 'frozen', detail: 'page 7' });
    expect(e.cause).toBe(cause);
    expect(e.rollbackErrors).toEqual([]);
  });

  it('lets the message and the hint be overridden', () => {
    const e = new FerryError('BAD_ARGUMENT', { message: '--max-rounds must be 1..100', hint: 'Use --max-rounds 10.' });
    expect(e.message).toBe('--max-rounds must be 1..100');
    expect(e.hint).toBe('Use --max-rounds 10.');
    expect(e.retryable).toBe(false);
  });

  it('has no cause, phase or side unless given', () => {
    const e = new FerryError('INTERNAL');
    expect(e.cause).toBeUndefined();
    expect(e.phase).toBeUndefined();
    expect(e.side).toBeUndefined();
    expect(e.sourceState).toBeUndefined();
    expect(e.detail).toBeUndefined();
  });

  it('serializes every field, rollback errors as their messages', () => {
    const e = new FerryError('CRIU_DUMP_FAILED', { phase: 'freeze', side: 'source', sourceState: 'running', detail: 'dump.log' });
    e.rollbackErrors.push(new Error('thaw failed'));
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      code: 'FERRY-4001',
      key: 'CRIU_DUMP_FAILED',
      message: ERRORS.CRIU_DUMP_FAILED.title,
      hint: ERRORS.CRIU_DUMP_FAILED.hint,
      phase: 'freeze',
      side: 'source',
      retryable: false,
      sourceState: 'running',
      detail: 'dump.log',
      rollbackErrors: ['thaw failed'],
    });
  });

  it('isFerryError matches the class and, when given, the key', () => {
    const e = new FerryError('TASK_EXITED');
    expect(isFerryError(e)).toBe(true);
    expect(isFerryError(e, 'TASK_EXITED')).toBe(true);
    expect(isFerryError(e, 'INTERNAL')).toBe(false);
    expect(isFerryError(new Error('x'))).toBe(false);
    expect(isFerryError({ key: 'TASK_EXITED', code: 'FERRY-3003' })).toBe(false);
  });

  it('asFerryError keeps a FerryError (the first cause wins) and wraps anything else', () => {
    const first = new FerryError('TASK_EXITED', { phase: 'precopy' });
    expect(asFerryError(first, 'INTERNAL')).toBe(first);

    const sys = new SystemCallError('process_vm_readv', 3, 'ESRCH', 'pid 42');
    const wrapped = asFerryError(sys, 'MEMORY_READ_FAILED', { phase: 'precopy', side: 'source' });
    expect(wrapped.key).toBe('MEMORY_READ_FAILED');
    expect(wrapped.cause).toBe(sys);
    expect(wrapped.detail).toBe('process_vm_readv (pid 42) failed: ESRCH (3)');
    expect(wrapped.phase).toBe('precopy');

    expect(asFerryError('boom', 'INTERNAL').detail).toBe('boom');
    expect(asFerryError(new Error('x'), 'INTERNAL', { detail: 'mine' }).detail).toBe('mine');
  });

  it('SystemCallError keeps the call and errno', () => {
    const e = new SystemCallError('pidfd_open', 1, 'EPERM');
    expect(e).toMatchObject({ name: 'SystemCallError', syscall: 'pidfd_open', errno: 1, errnoName: 'EPERM' });
    expect(e.message).toBe('pidfd_open failed: EPERM (1)');
  });
});

describe('FerryError over gRPC', () => {
  it.each(KEYS)('%s keeps its code, message, hint, phase, side and detail', (key) => {
    const sent = new FerryError(key, {
      phase: 'final-delta',
      side: 'dest',
      message: `custom message for ${key}`,
      hint: 'Do this.',
      detail: 'line 1\nline 2',
    });
    const st = toStatus(sent);
    expect(st.code).toBe(ERRORS[key].grpc);
    expect(st.details).toBe(`${ERRORS[key].code}: custom message for ${key}`);

    const fallback = new FerryError('PAGE_STREAM_FAILED');
    const got = fromServiceError(asServiceError(st), fallback);
    expect(got).not.toBe(fallback);
    expect(got.key).toBe(key);
    expect(got.code).toBe(ERRORS[key].code);
    expect(got.retryable).toBe(ERRORS[key].retryable);
    expect({ message: got.message, hint: got.hint, phase: got.phase, side: got.side, detail: got.detail }).toEqual({
      message: `custom message for ${key}`,
      hint: 'Do this.',
      phase: 'final-delta',
      side: 'dest',
      detail: 'line 1\nline 2',
    });
    expect(got.cause).toBeInstanceOf(Error);
  });

  it('keeps the default title and hint when none were overridden', () => {
    const got = roundTrip(new FerryError('SESSION_NOT_FOUND'));
    expect(got.message).toBe(ERRORS.SESSION_NOT_FOUND.title);
    expect(got.hint).toBe(ERRORS.SESSION_NOT_FOUND.hint);
    expect(got.phase).toBeUndefined();
    expect(got.detail).toBeUndefined();
  });

  // `ferry migrate --via` depends on this: a failure whose rollback failed must still exit 3 ("act now").
  it('keeps the state of the task on the source and the rollback errors', () => {
    const sent = new FerryError('CRIU_RESTORE_FAILED', { phase: 'restore', side: 'source', sourceState: 'unknown' });
    sent.rollbackErrors.push(new Error('thaw failed'));
    const got = roundTrip(sent);
    expect(got.sourceState).toBe('unknown');
    expect(got.rollbackErrors.map((e) => e.message)).toEqual(['thaw failed']);
    expect(exitCodeFor(got)).toBe(EXIT.unknown);
  });

  it('turns a non-Ferry error into INTERNAL without its message', () => {
    const secret = 'open /var/lib/secret-key: EACCES';
    const st = toStatus(new Error(secret));
    expect(st.code).toBe(status.INTERNAL);
    expect(st.details).toMatch(/^FERRY-9001: /);
    expect(st.details).not.toContain(secret);
    const trailer = st.metadata!.get('ferry-error-bin')[0];
    expect(trailer).toBeInstanceOf(Buffer);
    expect((trailer as Buffer).toString('utf8')).not.toContain(secret);

    const got = fromServiceError(asServiceError(st), new FerryError('PAGE_STREAM_FAILED'));
    expect(got.key).toBe('INTERNAL');
    expect(got.message).not.toContain(secret);
    expect(got.detail ?? '').not.toContain(secret);
    expect(toStatus('a thrown string').code).toBe(status.INTERNAL);
  });

  it('falls back on transport failures: no trailer, a malformed trailer, or an unknown code', () => {
    const fallback = new FerryError('DEST_UNREACHABLE');
    const bare = Object.assign(new Error('14 UNAVAILABLE'), { code: status.UNAVAILABLE, details: 'connect failed', metadata: new Metadata() });
    expect(fromServiceError(bare, fallback)).toBe(fallback);

    const garbage = new Metadata();
    garbage.set('ferry-error-bin', Buffer.from('{not json'));
    expect(fromServiceError({ ...bare, metadata: garbage }, fallback)).toBe(fallback);

    const unknown = new Metadata();
    unknown.set('ferry-error-bin', Buffer.from(JSON.stringify({ code: 'FERRY-9999', message: 'x' } satisfies Partial<SerializedFerryError>)));
    expect(fromServiceError({ ...bare, metadata: unknown }, fallback)).toBe(fallback);

    expect(fromServiceError(new Error('not even a gRPC error'), fallback)).toBe(fallback);
  });
});

describe('exitCodeFor', () => {
  const table: { name: string; error: unknown; want: number }[] = [
    { name: 'a bad argument is usage', error: new FerryError('BAD_ARGUMENT'), want: EXIT.usage },
    { name: 'a bad address is usage', error: new FerryError('BAD_ADDRESS'), want: EXIT.usage },
    { name: 'an insecure listener refused is usage', error: new FerryError('INSECURE_LISTEN_REFUSED'), want: EXIT.usage },
    { name: 'a refused negotiation is usage (nothing touched)', error: new FerryError('TASK_NOT_FOUND', { phase: 'negotiate', sourceState: 'running' }), want: EXIT.usage },
    { name: 'a platform mismatch is usage', error: new FerryError('PLATFORM_MISMATCH', { phase: 'negotiate', sourceState: 'running' }), want: EXIT.usage },
    { name: 'a retryable negotiate error is a failure', error: new FerryError('DEST_UNREACHABLE', { phase: 'negotiate', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a changing tree is a (retryable) failure', error: new FerryError('TASK_TREE_CHANGING', { phase: 'negotiate' }), want: EXIT.failed },
    { name: 'an interruption rolled back is 130', error: new FerryError('CANCELLED', { phase: 'precopy', sourceState: 'running' }), want: EXIT.interrupted },
    { name: 'an interruption whose rollback failed is unknown', error: new FerryError('CANCELLED', { phase: 'freeze', sourceState: 'unknown' }), want: EXIT.unknown },
    { name: 'an unconfirmed commit is unknown', error: new FerryError('COMMIT_UNCONFIRMED', { phase: 'commit', sourceState: 'frozen' }), want: EXIT.unknown },
    { name: 'any error with the source state unknown', error: new FerryError('CRIU_RESTORE_FAILED', { phase: 'restore', sourceState: 'unknown' }), want: EXIT.unknown },
    { name: 'even a usage-family error with the source state unknown', error: new FerryError('BAD_ARGUMENT', { sourceState: 'unknown' }), want: EXIT.unknown },
    { name: 'a prepare failure', error: new FerryError('DEST_PREPARE_FAILED', { phase: 'prepare', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a page stream failure', error: new FerryError('PAGE_STREAM_FAILED', { phase: 'precopy', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a dump failure', error: new FerryError('CRIU_DUMP_FAILED', { phase: 'freeze', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a rejected image', error: new FerryError('IMAGE_INVALID', { phase: 'final-delta', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a restore failure, source resumed', error: new FerryError('CRIU_RESTORE_FAILED', { phase: 'restore', sourceState: 'running' }), want: EXIT.failed },
    { name: 'a rejected commit, source resumed', error: new FerryError('COMMIT_REJECTED', { phase: 'commit', sourceState: 'running' }), want: EXIT.failed },
    { name: 'an internal error', error: new FerryError('INTERNAL'), want: EXIT.failed },
    { name: 'post-copy to a dest that cannot restore lazily is refused (nothing touched)', error: new FerryError('POSTCOPY_UNSUPPORTED', { phase: 'negotiate', sourceState: 'running' }), want: EXIT.usage },
    { name: 'the frozen original lost during the fill: the operator must act', error: new FerryError('ORIGINAL_LOST', { phase: 'fill', sourceState: 'gone' }), want: EXIT.unknown },
    { name: 'a non-Ferry error', error: new Error('boom'), want: EXIT.failed },
    { name: 'a thrown string', error: 'boom', want: EXIT.failed },
  ];

  it.each(table)('$name -> $want', ({ error, want }) => {
    expect(exitCodeFor(error)).toBe(want);
  });

  it('uses the documented numbers', () => {
    expect(EXIT).toEqual({ ok: 0, failed: 1, usage: 2, unknown: 3, interrupted: 130 });
  });
});
