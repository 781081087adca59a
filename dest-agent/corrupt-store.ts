/** The dest.corrupt-store fault: damage on disk that only reading the store back can find. */
import { open } from 'node:fs/promises';
import type { TaskPageStore } from './page-store.js';

/** Flips one byte of the first stored page, as a failing disk would. */
export async function corruptOnePage(stores: Iterable<TaskPageStore>): Promise<void> {
  const [store] = stores;
  const level = store?.levels[0];
  if (!level) return;
  const fh = await open(level.path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 100);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, 100);
  } finally {
    await fh.close();
  }
}
