/** Sends the dump's non-page images to the dest, verbatim, in 1 MiB chunks (UploadImages client stream). */
import type * as grpc from '@grpc/grpc-js';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../shared/errors/ferry-error.js';
import { injectFault } from '../shared/fault-injection.js';
import { fromServiceError } from '../shared/errors/grpc-status.js';
import type * as m from '../shared/transport/messages.js';
import type { DestClient } from './dest-client.js';
import { PAGES_IMAGE } from '../shared/criu/image-names.js';

const CHUNK = 1024 * 1024;

export async function uploadImages(
  client: DestClient,
  imagesDir: string,
  ids: { migrationId: string; epoch: string },
  signal: AbortSignal,
): Promise<{ files: number; bytes: number }> {
  signal.throwIfAborted();
  injectFault('source.before-upload-images');
  const names = (await readdir(imagesDir)).filter((n) => !PAGES_IMAGE.test(n)).sort();
  let call!: grpc.ClientWritableStream<m.ImageChunk>;
  const response = new Promise<m.UploadImagesResponse>((resolve, reject) => {
    call = (client.raw.UploadImages as (cb: grpc.requestCallback<m.UploadImagesResponse>) => grpc.ClientWritableStream<m.ImageChunk>)((err, res) => {
      if (err) {
        reject(fromServiceError(err, new FerryError('IMAGE_UPLOAD_FAILED', { phase: 'final-delta', side: 'source', detail: err.details || err.message, cause: err })));
      } else resolve(res!);
    });
  });
  const onAbort = (): void => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  // Keep the rejection observed while we are still writing; it is awaited below.
  response.catch(() => undefined);
  try {
    for (const name of names) {
      const path = join(imagesDir, name);
      const size = (await stat(path)).size;
      const fh = await open(path, 'r');
      try {
        let offset = 0;
        do {
          const data = Buffer.allocUnsafe(Math.min(CHUNK, size - offset));
          const { bytesRead } = await fh.read(data, 0, data.length, offset);
          const ok = call.write({ migrationId: ids.migrationId, epoch: ids.epoch, name, offset: String(offset), data: data.subarray(0, bytesRead), totalSize: String(size) });
          offset += bytesRead;
          // A failed call never drains: racing the response turns that into its error.
          if (!ok) await Promise.race([new Promise((resolve) => call.once('drain', resolve)), response]);
        } while (offset < size);
      } finally {
        await fh.close();
      }
    }
    call.end();
    const res = await response;
    injectFault('source.after-upload-images');
    return { files: res.files, bytes: Number(res.bytes) };
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
