/**
 * The numbered fault points around every call to the dest (shared/fault-injection.ts): `source.before-X`
 * fires before the request leaves, `source.after-X` once its answer arrived and before anyone acts on it.
 */
import { injectFault, type FaultPoint } from '../../shared/fault-injection.js';
import type { DestPort } from './ports.js';

async function around<T>(call: string, run: () => Promise<T>): Promise<T> {
  injectFault(`source.before-${call}` as FaultPoint);
  const answer = await run();
  if (call !== 'abort') injectFault(`source.after-${call}` as FaultPoint);
  return answer;
}

export function withFaultPoints(dest: DestPort): DestPort {
  return {
    ...dest,
    prepare: (req, s) => around('prepare', () => dest.prepare(req, s)),
    uploadImages: (dir, ids, s) => around('upload-images', () => dest.uploadImages(dir, ids, s)),
    restore: (req, s) => around('restore', () => dest.restore(req, s)),
    commit: (req) => around('commit', () => dest.commit(req)),
    abort: (req) => around('abort', () => dest.abort(req)),
  };
}
