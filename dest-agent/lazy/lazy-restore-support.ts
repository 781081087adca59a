/**
 * Whether this dest can restore lazily: the pager is built (build/Release/ferry_pager) and CRIU with this kernel
 * has userfaultfd with non-cooperative events (`criu check --feature uffd-noncoop`). Negotiate offers the
 * `lazy-restore` feature only then; `ferry check` shows the reason otherwise.
 */
import { probeCriu } from '../../shared/criu/criu-binary.js';
import { lazyDumpSupported } from '../../shared/criu/criu-lazy-dump.js';
import { pagerBinary } from './pager-process.js';

export { LAZY_RESTORE_FEATURE } from '../../shared/peer-info.js';

export type LazyRestoreSupport = { ok: true } | { ok: false; reason: string };

export async function probeLazyRestore(): Promise<LazyRestoreSupport> {
  try {
    pagerBinary();
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
  const criu = await probeCriu();
  if (!criu.ok) return { ok: false, reason: criu.reason };
  if (!(await lazyDumpSupported(criu.path))) return { ok: false, reason: `${criu.path} check --feature uffd-noncoop failed: this kernel lacks userfaultfd with non-cooperative events` };
  return { ok: true };
}
