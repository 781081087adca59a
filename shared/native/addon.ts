/**
 * Ferry's own N-API addon (shared/native/addon/ferry_native.c, built by node-gyp into
 * build/Release/ferry_native.node when `npm ci` runs). Loaded on first use, so that importing this module
 * never fails: code paths that do not hash keep working, and preflight can report a missing build.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { FerryError } from '../errors/ferry-error.js';
import { repoRoot } from '../repo-root.js';

/** Bytes of one page hash: XXH3-128, low 64 bits then high 64 bits, each little-endian. */
export const PAGE_HASH_BYTES = 16;

interface NativeAddon {
  hashPages(src: Uint8Array, pageCount: number, pageSize: number, out: Uint8Array): void;
  zeroPages(src: Uint8Array, pageCount: number, pageSize: number, out: Uint8Array): number;
}

let addon: NativeAddon | undefined;

/** Loads the addon (once). Throws FerryError NATIVE_UNAVAILABLE when it is not built or does not load. */
export function loadNativeAddon(): NativeAddon {
  if (addon) return addon;
  let path = 'build/Release/ferry_native.node';
  try {
    // repoRoot() finds the package.json named "ferry" upward: this file runs from shared/ and dist/shared/.
    path = join(repoRoot(), path);
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new FerryError('NATIVE_UNAVAILABLE', { detail: `${path}: ${e instanceof Error ? e.message : String(e)}`, cause: e });
  }
  return addon;
}

/**
 * Hashes pages 0..pageCount-1 of `src` (pageSize bytes each) with XXH3-128 into `out` at PAGE_HASH_BYTES * i.
 * Throws TypeError/RangeError when the buffers are too short or the counts are not integers.
 */
export function hashPages(src: Uint8Array, pageCount: number, pageSize: number, out: Uint8Array): void {
  loadNativeAddon().hashPages(src, pageCount, pageSize, out);
}

/** Sets out[i] = 1 when page i of `src` is all zero bytes, else 0. Returns how many pages are zero. */
export function zeroPages(src: Uint8Array, pageCount: number, pageSize: number, out: Uint8Array): number {
  return loadNativeAddon().zeroPages(src, pageCount, pageSize, out);
}

/** The XXH3-128 hash of one page (the whole of `page`), in the layout of hashPages. */
export function pageHash(page: Uint8Array): Buffer {
  const out = Buffer.alloc(PAGE_HASH_BYTES);
  loadNativeAddon().hashPages(page, 1, page.byteLength, out);
  return out;
}
