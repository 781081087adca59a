/** --compress auto (issue 15): compress only where the link is the limit, from measured link rate, ratio and speed. */
import { describe, expect, it } from 'vitest';
import { chooseCompression, compressionGain } from '../../shared/policy/compression-choice.js';
import { zstdProblem } from '../../shared/native/zstd.js';
import { DECIDE_EVERY, PageCompression } from '../../source-agent/pages/page-compression.js';
import { heapLikePages, randomPages } from '../../testbed/page-contents.js';

const MB = 1e6;
const heapLike = { ratio: 5, compressBytesPerSecond: 1500 * MB };

describe('chooseCompression', () => {
  it('a fast link never compresses: the compressor is slower than the wire', () => {
    for (const link of [1250 * MB, 2500 * MB]) {
      expect(chooseCompression('auto', true, 'none', { linkBytesPerSecond: link, ...heapLike }).codec).toBe('none');
      expect(chooseCompression('auto', true, 'zstd', { linkBytesPerSecond: link, ...heapLike }).codec).toBe('none');
    }
  });

  it('a slow link with compressible pages compresses', () => {
    const c = chooseCompression('auto', true, 'none', { linkBytesPerSecond: 12.5 * MB, ...heapLike });
    expect(c.codec).toBe('zstd');
    expect(c.gain).toBeGreaterThan(4);
  });

  it('incompressible pages are not compressed, however slow the link', () => {
    expect(chooseCompression('auto', true, 'none', { linkBytesPerSecond: 12.5 * MB, ratio: 1.0, compressBytesPerSecond: 700 * MB }).codec).toBe('none');
    expect(chooseCompression('auto', true, 'zstd', { linkBytesPerSecond: 12.5 * MB, ratio: 1.02, compressBytesPerSecond: 700 * MB }).codec).toBe('none');
  });

  it('hysteresis: a gain between the two bounds keeps the codec in use', () => {
    // ratio 1.2 on a 100 MB/s link: ~1.2x, above offGain (stay on), below onGain (do not switch on).
    const e = { linkBytesPerSecond: 100 * MB, ratio: 1.2, compressBytesPerSecond: 2000 * MB };
    const g = compressionGain(e)!;
    expect(g).toBeGreaterThan(1.1);
    expect(g).toBeLessThan(1.3);
    expect(chooseCompression('auto', true, 'none', e).codec).toBe('none');
    expect(chooseCompression('auto', true, 'zstd', e).codec).toBe('zstd');
  });

  it('off, zstd, no common codec, and nothing measured yet', () => {
    const slow = { linkBytesPerSecond: 12.5 * MB, ...heapLike };
    expect(chooseCompression('off', true, 'none', slow).codec).toBe('none');
    expect(chooseCompression('auto', false, 'none', slow).codec).toBe('none');
    expect(chooseCompression('zstd', false, 'none', slow).codec).toBe('none');
    expect(chooseCompression('zstd', true, 'none', { linkBytesPerSecond: 2500 * MB, ...heapLike }).codec).toBe('zstd');
    expect(chooseCompression('auto', true, 'none', { linkBytesPerSecond: undefined, ratio: undefined, compressBytesPerSecond: undefined }).codec).toBe('none');
  });
});

const problem = zstdProblem();
if (problem) console.log(`PageCompression: skipped, ${problem}`);

/** Sends `batches` batches of `data` through `c` over a fake link of `linkBytesPerSecond` (acked at once, time advanced by hand). */
function run(c: PageCompression, data: Buffer, batches: number, linkBytesPerSecond: number, round = 0): void {
  for (let i = 0; i < batches; i++) {
    const e = c.encode(round, data);
    c.sent();
    busyWait((e.payload.length * 1000) / linkBytesPerSecond);
    c.acked(e.payload.length);
  }
}

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe.skipIf(problem !== undefined)('PageCompression (auto) measures and decides', () => {
  const batch = heapLikePages(64); // 256 KiB
  it('switches on within a round on a slow link with heap-like pages, and reports the round as zstd', () => {
    const c = new PageCompression({ mode: 'auto', codecs: ['zstd'] });
    run(c, batch, 3 * DECIDE_EVERY, 50 * MB);
    expect(c.current).toBe('zstd');
    expect(c.measured.ratio).toBeGreaterThan(3);
    expect(c.roundCodec(0)).toBe('zstd');
    const r = c.rounds.get(0)!;
    expect(r.rawBytes / r.wireBytes).toBeGreaterThan(2);
  });

  it('stays off with random pages: the probes show they do not shrink', () => {
    const c = new PageCompression({ mode: 'auto', codecs: ['zstd'] });
    run(c, randomPages(64), 3 * DECIDE_EVERY, 50 * MB);
    expect(c.current).toBe('none');
    expect(c.roundCodec(0)).toBe('none');
    expect(c.wireBytes).toBe(c.rawBytes);
  });

  it('stays off without a codec the dest accepted, and with --compress off', () => {
    for (const c of [new PageCompression({ mode: 'auto', codecs: [] }), new PageCompression({ mode: 'off', codecs: ['zstd'] })]) {
      run(c, batch, DECIDE_EVERY + 1, 50 * MB);
      expect(c.wireBytes).toBe(c.rawBytes);
    }
  });

  it('--compress zstd compresses from the first batch', () => {
    const c = new PageCompression({ mode: 'zstd', codecs: ['zstd'] });
    expect(c.encode(0, batch).codec).toBe('zstd');
  });

  it('a bandwidth cap counts as the link', () => {
    // An instant link, capped at 10 MB/s: compressing pays.
    const c = new PageCompression({ mode: 'auto', codecs: ['zstd'], capBytesPerSecond: 10 * MB });
    run(c, batch, 3 * DECIDE_EVERY, 5000 * MB);
    expect(c.current).toBe('zstd');
  });
});
