/**
 * The CRIU images a session received through UploadImages: each file arrives in chunks at increasing offsets
 * and is written under the session's images directory. Names are checked before anything touches the disk,
 * and every file and byte is taken from the session's budget (session-budget.ts).
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { IMAGE_NAME, PAGES_IMAGE } from '../shared/criu/image-names.js';
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';
import type * as m from '../shared/transport/messages.js';
import type { SessionBudget } from './session-budget.js';

const MAX_IMAGE_BYTES = 1024 * 1024 * 1024;
/** Without these CRIU cannot even start a restore. */
const REQUIRED_IMAGES = ['inventory.img', 'pstree.img'];

const invalid = (phase: Phase, detail: string): FerryError => new FerryError('IMAGE_INVALID', { side: 'dest', phase, detail });

export class UploadedImages {
  /** Bytes received per image, to check offsets and sizes. */
  private readonly seen = new Map<string, { written: number; total: number }>();

  constructor(
    private readonly dir: string,
    private readonly budget: SessionBudget,
  ) {}

  /** Writes one chunk; returns true when it opened a new file. IMAGE_INVALID for a bad name or a gap. */
  async write(chunk: m.ImageChunk): Promise<boolean> {
    // The dest writes pages-*.img itself from its page store; a peer may never send one.
    if (!IMAGE_NAME.test(chunk.name) || PAGES_IMAGE.test(chunk.name)) throw invalid('final-delta', `image name not allowed: ${JSON.stringify(chunk.name.slice(0, 140))}`);
    const total = Number(chunk.totalSize);
    const offset = Number(chunk.offset);
    if (!(total >= 0 && total <= MAX_IMAGE_BYTES)) throw invalid('final-delta', `${chunk.name}: size ${chunk.totalSize} out of bounds`);
    let seen = this.seen.get(chunk.name);
    const opened = !seen;
    if (!seen) {
      if (offset !== 0) throw invalid('final-delta', `${chunk.name}: first chunk at offset ${offset}`);
      this.budget.takeImageFile('final-delta');
      seen = { written: 0, total };
      this.seen.set(chunk.name, seen);
    }
    if (offset !== seen.written || total !== seen.total || offset + chunk.data.length > total) {
      throw invalid('final-delta', `${chunk.name}: chunk at ${offset}+${chunk.data.length} does not continue ${seen.written}/${seen.total}`);
    }
    this.budget.takeBytes(chunk.data.length, 'final-delta');
    const fh = await open(join(this.dir, chunk.name), offset === 0 ? 'w' : 'r+');
    try {
      await fh.write(chunk.data, 0, chunk.data.length, offset);
    } finally {
      await fh.close();
    }
    seen.written += chunk.data.length;
    return opened;
  }

  /** Before the restore: every image arrived whole, and the ones CRIU starts from are there. */
  checkComplete(): void {
    for (const [name, seen] of this.seen) {
      if (seen.written !== seen.total) throw invalid('restore', `${name}: ${seen.written} of ${seen.total} bytes`);
    }
    if (!REQUIRED_IMAGES.every((name) => this.seen.has(name))) throw invalid('restore', `${REQUIRED_IMAGES.join(' or ')} missing`);
  }

  /** A manifest may only name an image that was uploaded (and so passed the name check). */
  checkUploaded(name: string): void {
    if (!IMAGE_NAME.test(name) || !this.seen.has(name)) throw invalid('restore', `manifest names ${JSON.stringify(name.slice(0, 140))}, which was not uploaded`);
  }
}
