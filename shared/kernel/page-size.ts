import { execFileSync } from 'node:child_process';

/** The kernel's page size, read once (getconf asks sysconf(_SC_PAGESIZE)); 4096 on x86_64. */
export const PAGE_SIZE: number = (() => {
  try {
    const v = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(v) && v > 0) return v;
  } catch {
    /* getconf is in libc-bin, present on every Debian; fall back to the x86_64 size if it is not */
  }
  return 4096;
})();
