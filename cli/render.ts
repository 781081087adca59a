/** Renders migration progress: a redrawn status line on a TTY, plain lines otherwise, JSON lines on --json. */
import type { MigrationEvent, MigrationSummary } from '../source-agent/migration/events.js';
import type { FerryError, SerializedFerryError } from '../shared/errors/ferry-error.js';

const MiB = 2 ** 20;
const fmtBytes = (b: number): string => (b >= 10 * MiB ? `${(b / MiB).toFixed(0)} MiB` : b >= MiB ? `${(b / MiB).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`);
const fmtMs = (ms: number): string => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);

export function describeEvent(e: MigrationEvent): string | undefined {
  switch (e.kind) {
    case 'started':
      return `migrating pid ${e.pid} (${e.tasks} process${e.tasks === 1 ? '' : 'es'}) to ${e.dest}, migration ${e.migrationId}\n${e.trackerNote}`;
    case 'phase':
      return `phase: ${e.phase}`;
    case 'round': {
      const r = e.round;
      return (
        `round ${r.round}: ${r.dirtyPages} dirty of ${r.presentPages} present pages, ${fmtBytes(r.bytesSent)} in ${fmtMs(r.durationMs)}` +
        ` (${fmtBytes(e.rateBytesPerSecond)}/s); total ${fmtBytes(e.bytesSent)}` +
        (r.codec === 'zstd' ? `; zstd: ${fmtBytes(r.wireBytes)} on the wire` : '') +
        (r.throttlePercent > 0 ? `; task throttled to ${100 - r.throttlePercent} %` : '')
      );
    }
    case 'progress':
      return `round ${e.round}: sending, ${fmtBytes(e.bytesSent)} sent in all`;
    case 'decision':
      return e.message;
    case 'done':
      return undefined;
    case 'failed':
      return undefined;
  }
}

/** Bytes sent in all phases over the task's memory at the dump (the dumped pages). */
function rssRatio(s: MigrationSummary): string {
  const rss = s.dumpPages * 4096;
  return rss > 0 ? ((s.precopyBytes + s.downtimeBytes + s.postcopyBytes) / rss).toFixed(2) : '0';
}
/** What --compress did: the wire bytes and ratio, or why nothing was compressed. */
function compression(s: MigrationSummary): string {
  if (s.compress === 'off') return '';
  if (s.pageCodec !== 'zstd') return ' (no codec both agents speak: sent as is)';
  const ratio = s.pageWireBytes > 0 ? s.pageBytesSent / s.pageWireBytes : 1;
  return `: pages ${fmtBytes(s.pageWireBytes)} on the wire (${ratio.toFixed(2)} x smaller)`;
}
const fmtWait = (us: number): string => `${(us / 1000).toFixed(us >= 10_000 ? 0 : 2)} ms`;

export function formatSummary(s: MigrationSummary): string {
  const p = s.phases;
  return [
    `migrated pid ${s.pid} to ${s.dest}: restored pid ${s.restoredPid} on the dest`,
    `  rounds      ${s.rounds.length} (${s.decision})`,
    `  pages       ${s.presentPages} present at round 0, ${s.pagesSent} sent (${s.finalDeltaPages} in the final delta of ${s.dumpPages} dumped)`,
    `  bytes       ${fmtBytes(s.pageBytesSent)} of pages + ${fmtBytes(s.imageBytesSent)} of images`,
    `  compress    ${s.compress}${compression(s)}`,
    `  bytes: pre-copy ${fmtBytes(s.precopyBytes)}, downtime ${fmtBytes(s.downtimeBytes)}, post-copy ${fmtBytes(s.postcopyBytes)} = ${rssRatio(s)} x RSS`,
    ...(s.postCopied
      ? [
          `  post-copy: ${s.remotePages} pages after the resume, ${s.fillFaultsWaited} faults waited (p50 ${fmtWait(s.faultWaitP50Us)}, p99 ${fmtWait(s.faultWaitP99Us)})`,
        ]
      : []),
    `  total time  ${fmtMs(s.totalMs)}`,
    ...(s.throttle ? [`  throttle    up to ${s.throttle.maxPercent} % of the task's CPU taken (${s.throttle.method}), released at the freeze`] : []),
    `  downtime    ${fmtMs(s.downtimeMs)} (${s.dumpKind} dump ${fmtMs(p.dumpMs ?? 0)}, final delta ${fmtMs(p.finalDeltaMs ?? 0)}, rebuild ${fmtMs(p.rebuildMs ?? 0)}, ${s.restoreMode} restore ${fmtMs(p.restoreMs ?? 0)}, commit ${fmtMs(p.commitMs ?? 0)})`,
    ...(s.restoreMode === 'lazy'
      ? [
          `  fill        ${fmtMs(s.fillMs)} after the resume: ${s.fillFaults} faults (${s.fillFaultsWaited} waited for a confirmation), ${s.confirmedPages} pages confirmed against the original, ${s.replacedPages} replaced; the pager put ${s.filledPages} pages in (${s.pagerFillUs > 0 ? ((s.filledPages * 4096) / (s.pagerFillUs * 1000)).toFixed(2) : '0'} GB/s from criu restore's end)`,
        ]
      : []),
    s.originalLeft.length > 0
      ? `  original    NOT gone ${fmtMs(s.originalExitMs)} after SIGKILL: pid ${s.originalLeft.join(', ')} still alive on this host (see /proc/PID/stack)`
      : `  original    gone ${fmtMs(s.originalExitMs)} after SIGKILL`,
  ].join('\n');
}

export function formatError(e: FerryError | SerializedFerryError): string {
  const lines = [`ferry: ${e.code}: ${e.message}`];
  if (e.detail) lines.push(`  detail: ${e.detail.split('\n').join('\n          ')}`);
  if (e.sourceState) lines.push(`  the task on the source: ${e.sourceState}`);
  const rb = 'rollbackErrors' in e ? e.rollbackErrors : undefined;
  for (const r of rb ?? []) lines.push(`  rollback: ${typeof r === 'string' ? r : r.message}`);
  lines.push(`  hint: ${e.hint}`);
  return lines.join('\n');
}

/** The live view: one status line redrawn at most 10 times a second on a TTY; every event on its own line. */
export class ProgressView {
  private lastDraw = 0;
  private status = '';

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly json: boolean,
  ) {}

  event(e: MigrationEvent): void {
    if (this.json) {
      this.out.write(JSON.stringify(e) + '\n');
      return;
    }
    const text = describeEvent(e);
    if (text === undefined) return;
    // A running round's progress only moves the status line; a log of lines gets the rounds themselves.
    if (e.kind === 'progress' && !this.out.isTTY) return;
    if (!this.out.isTTY) {
      this.out.write(text + '\n');
      return;
    }
    if (e.kind === 'round' || e.kind === 'progress') {
      this.status = text;
      const now = Date.now();
      if (now - this.lastDraw >= 100) {
        this.lastDraw = now;
        this.out.write(`\r\x1b[2K${this.status}`);
      }
      return;
    }
    this.out.write(`\r\x1b[2K${text}\n`);
  }

  finish(): void {
    if (!this.json && this.out.isTTY && this.status) this.out.write(`\r\x1b[2K${this.status}\n`);
  }
}
