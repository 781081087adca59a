/**
 * Where criu restore reads the task's memory from. The dump's images name every page (its pagemaps) but the
 * pages themselves are in the session's page store; a page source makes CRIU find them there, and checks
 * the bytes it serves against the hashes of the manifest. DestService.restore knows only this interface:
 *   prepare(manifests)   before criu restore: checks that the store holds every dumped page in its dumped
 *                        version and rewrites the images so that CRIU reads them from the source
 *   verify()             beside criu restore (the copy stays stopped): resolves when the bytes CRIU may read
 *                        are known good; a rejection means the restored copy must be killed
 * The eager restore's implementation is the store-backed parent-image chain (image-chain.ts); a lazy restore
 * makes its images in lazy/lazy-images.ts and leaves the pages to its pager.
 */
import type { DestSession } from './session.js';

export interface PagesManifest {
  pagemapImage: string;
  task: number;
  /** XXH3-128 of each page of the pagemap (present or lazy), in pagemap order. */
  hashes: Buffer;
  /** One bit per page, LSB first: not yet confirmed against the frozen original (lazy restore). Empty: all confirmed. */
  unconfirmed?: Buffer;
  /** Post-copy, one bit per page: the dest holds no bytes of it (lazy restore only; lazy/remote-pages.ts). */
  remote?: Buffer;
}

export interface PreparedPages {
  /** Images CRIU reads through to reach the pages (1 when they are all in one place). */
  levels: number;
  /** Pages the dump references, all served from the store. */
  pages: number;
}

export interface RestorePageSource {
  /**
   * Takes the session's stores over on success (the session's map is emptied: from then on the source
   * closes them). On a refusal (REBUILD_PAGE_MISSING, REBUILD_HASH_MISMATCH, IMAGE_INVALID) they stay
   * with the session.
   */
  prepare(manifests: readonly PagesManifest[]): Promise<PreparedPages>;
  /** Returns the pages checked. Called once, after a successful prepare(). */
  verify(): Promise<number>;
}

/** What a page source may use of the session. */
export type PageSourceSession = Pick<DestSession, 'dir' | 'imagesDir' | 'pageSize' | 'stores'>;

/** Makes the page source of one restore. */
export type RestorePageSourceFactory = (session: PageSourceSession) => RestorePageSource;
