/**
 * What leaves an agent is bounded (issue 9): error trailers, log lines and the /metrics listen address. A peer's
 * 100,000-character string must not become a trailer HTTP/2 cannot send, nor the agent's log; /metrics on
 * every interface needs the operator's explicit word.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { truncateText } from '../../shared/bounded-text.js';
import { FerryError } from '../../shared/errors/ferry-error.js';
import { fromServiceError, toStatus } from '../../shared/errors/grpc-status.js';
import { createLogger } from '../../shared/logging/logger.js';
import { checkMetricsAddress, isWildcardHost, serveMetrics } from '../../shared/metrics/metrics-server.js';
import { expectFerryError, expectFerryRejection } from '../support/ferry-error-expect.js';

describe('truncateText', () => {
  it('keeps what fits and cuts the rest on a character boundary, saying how much', () => {
    expect(truncateText('short')).toBe('short');
    const cut = truncateText('y'.repeat(100_000));
    expect(Buffer.byteLength(cut)).toBeLessThan(1100);
    expect(cut).toMatch(/^y+\.\.\. \(\d+ more characters\)$/);
    // Multi-byte text is cut by bytes, never in the middle of a character.
    const emoji = truncateText('\u{1F600}'.repeat(1000), 64);
    expect(Buffer.byteLength(emoji)).toBeLessThan(64 + 40);
    expect(emoji).not.toContain('\uFFFD');
  });
});

describe('the error trailer', () => {
  it('stays far below the HTTP/2 header limit whatever the error carries, and still round-trips its code', () => {
    const e = new FerryError('IMAGE_INVALID', { message: 'm'.repeat(100_000), hint: 'h'.repeat(100_000), detail: 'd'.repeat(100_000) });
    for (let i = 0; i < 100; i++) e.rollbackErrors.push(new Error('r'.repeat(10_000)));
    const st = toStatus(e);
    const trailer = st.metadata!.get('ferry-error-bin')[0] as Buffer;
    expect(trailer.length).toBeLessThan(4096);
    expect(Buffer.byteLength(st.details!)).toBeLessThan(400);
    const got = fromServiceError(Object.assign(new Error('x'), { code: st.code!, details: st.details!, metadata: st.metadata! }), new FerryError('INTERNAL'));
    expect(got.key).toBe('IMAGE_INVALID');
    expect(got.detail!.startsWith('d'.repeat(1000))).toBe(true);
    expect(got.rollbackErrors).toHaveLength(5); // four, and how many more
  });
});

describe('the log', () => {
  it('cuts every string to 1 KiB and every list to 64 entries, and prints a bigint', () => {
    const lines: string[] = [];
    const log = createLogger({ side: 'dest' }, (l) => lines.push(l), 'debug');
    const err = new FerryError('IMAGE_INVALID', { detail: `image name not allowed: ${'n'.repeat(100_000)}` });
    log.warn('call failed', { err, name: 'x'.repeat(100_000), pids: Array.from({ length: 2_000_000 }, (_, i) => i), epoch: 2n ** 64n - 1n });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.length).toBeLessThan(4096);
    const rec = JSON.parse(lines[0]!) as { pids: unknown[]; epoch: string; err: { detail: string } };
    expect(rec.pids).toHaveLength(65);
    expect(rec.epoch).toBe('18446744073709551615');
    expect(rec.err.detail.length).toBeLessThan(1100);
  });
});

describe('the /metrics listen address', () => {
  it.each([
    ['0.0.0.0', true],
    ['::', true],
    ['::0', true],
    ['0:0:0:0:0:0:0:0', true],
    ['::ffff:0.0.0.0', true],
    ['127.0.0.1', false],
    ['::1', false],
    ['10.0.0.2', false],
    ['localhost', false],
  ])('%s is a wildcard: %s', (host, wildcard) => {
    expect(isWildcardHost(host)).toBe(wildcard);
  });

  it('refuses a wildcard with METRICS_WILDCARD_REFUSED unless the policy allows it', async () => {
    expectFerryError(() => checkMetricsAddress({ host: '0.0.0.0', port: 9100 }), 'METRICS_WILDCARD_REFUSED');
    await expectFerryRejection(serveMetrics(new Registry(), { host: '::', port: 0 }), 'METRICS_WILDCARD_REFUSED');
    const allowed = await serveMetrics(new Registry(), { host: '0.0.0.0', port: 0 }, { allowWildcard: true });
    expect(allowed.port).toBeGreaterThan(0);
    await allowed.close();
    const one = await serveMetrics(new Registry(), { host: '127.0.0.1', port: 0 });
    await one.close();
  });
});
