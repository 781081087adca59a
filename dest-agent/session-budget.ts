/**
 * What one session may hold, fixed at Prepare from the bytes the source announced (dest-limits.ts): distinct
 * pages (each costs a slot in the index, zero ones included), bytes on disk (page data and images; a zero
 * page is a hole and costs none), and image files. Checked as pages and chunks arrive, before they are stored.
 */
import { FerryError } from '../shared/errors/ferry-error.js';
import type { Phase } from '../shared/phases.js';

/** Far more image files than CRIU writes for MAX_TASKS tasks (a dozen or so each). */
const MAX_IMAGE_FILES = 65_536;

export class SessionBudget {
  private pageSlots = 0;
  private diskBytes = 0;
  private imageFiles = 0;

  constructor(
    readonly limitBytes: number,
    private readonly pageSize: number,
  ) {}

  /** No bound: for a store used on its own (tests, tools). */
  static unlimited(pageSize: number): SessionBudget {
    return new SessionBudget(Number.MAX_SAFE_INTEGER, pageSize);
  }

  /** Takes `newSlots` page slots and `newBytes` on disk, or refuses both with SESSION_QUOTA_EXCEEDED. */
  takePages(newSlots: number, newBytes: number, phase: Phase): void {
    if ((this.pageSlots + newSlots) * this.pageSize > this.limitBytes) {
      throw this.exceeded(phase, `${this.pageSlots + newSlots} distinct pages`);
    }
    this.takeBytes(newBytes, phase);
    this.pageSlots += newSlots;
  }

  takeBytes(newBytes: number, phase: Phase): void {
    if (this.diskBytes + newBytes > this.limitBytes) throw this.exceeded(phase, `${this.diskBytes + newBytes} bytes on disk`);
    this.diskBytes += newBytes;
  }

  takeImageFile(phase: Phase): void {
    if (this.imageFiles >= MAX_IMAGE_FILES) throw this.exceeded(phase, `more than ${MAX_IMAGE_FILES} image files`);
    this.imageFiles++;
  }

  /** What the session may still write to disk: reserved from the free space when another session opens. */
  get remainingBytes(): number {
    return Math.max(0, this.limitBytes - this.diskBytes);
  }

  get usedBytes(): number {
    return this.diskBytes;
  }

  private exceeded(phase: Phase, what: string): FerryError {
    return new FerryError('SESSION_QUOTA_EXCEEDED', { side: 'dest', phase, detail: `${what}: the session may hold ${this.limitBytes} bytes (announced at prepare, with slack)` });
  }
}
