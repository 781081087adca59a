/**
 * prepare: the tracker is created (for uffd-wp this is when the task is first touched), the dest opens a
 * session and a page store, and the page stream opens. Each registers its undo before the next step.
 */
import { PAGE_CHANNELS_FEATURE } from '../../../shared/peer-info.js';
import { TokenBucket } from '../../token-bucket.js';
import { PageCompression } from '../../pages/page-compression.js';
import type { DirtyTracker } from '../../trackers/tracker.js';
import type { MigrationContext } from '../migration-context.js';
import type { PageStream } from '../ports.js';
import type { UndoHandle } from '../rollback-stack.js';
import type { Negotiated } from './negotiate.js';

export interface Prepared {
  tracker: DirtyTracker;
  stream: PageStream;
  /** Released once the dest runs the copy: from then on nothing may abort its session. */
  abortDestSession: UndoHandle;
  /** Released once every page is acknowledged: the stream ended on its own. */
  dropStream: UndoHandle;
  /** The batches' codec, chosen per round, and what it saved (the stream encodes through it). */
  compression: PageCompression;
}

export async function prepare(ctx: MigrationContext, n: Negotiated): Promise<Prepared> {
  const { opts, rollback, migrationId, epoch, signal } = ctx;
  const tracker = ctx.host.createTracker(n.tracker.name);
  rollback.push('close the tracker', () => tracker.close());
  const target = n.target;
  // Pushed before the call: a Prepare that failed here (a deadline, a hung dest) may still open the session
  // there later, and the Abort then stops it. A dest that is gone cannot be told; its lease and its restart
  // remove the session.
  const abortDestSession = rollback.push(
    'abort the dest session',
    async () => {
      await n.dest.abort({ migrationId, epoch, reason: `rollback after ${ctx.phase}` });
    },
    'dest',
  );
  // Page channels only to a dest that offers them: an older one answers StreamPages alone.
  const wanted = n.destInfo.features.includes(PAGE_CHANNELS_FEATURE) ? opts.pageChannels : 0;
  const answer = await n.dest.prepare(
    {
      migrationId,
      epoch,
      protocolVersion: n.protocolVersion,
      // A pid-namespace root brings its own pids; any other tree needs its host pids free on the dest.
      requiredPids: target.pidNamespaceRoot ? [] : target.tasks.map((t) => t.hostPid),
      expectedBytes: String(target.residentBytes),
      taskName: target.name,
      pageChannels: wanted,
    },
    signal,
  );
  const compression = new PageCompression({
    mode: opts.compress,
    codecs: n.pageCodecs,
    level: opts.compressLevel,
    capBytesPerSecond: opts.bandwidthBytesPerSecond,
    onChange: (round, choice) => ctx.log.info('page codec', { round, codec: choice.codec, reason: choice.reason }),
  });
  const token = answer.pageChannelToken;
  const channels = wanted > 0 && answer.pageChannelPort && token && token.length > 0 && answer.pageChannels ? { port: answer.pageChannelPort, token, count: answer.pageChannels } : undefined;
  const stream = await n.dest.openPageStream({
    migrationId,
    epoch,
    windowBytes: opts.windowBytes,
    signal,
    phase: () => ctx.phase,
    bandwidth: opts.bandwidthBytesPerSecond ? new TokenBucket(opts.bandwidthBytesPerSecond) : undefined,
    compression,
    channels,
  });
  const dropStream = rollback.push('drop the page stream', () => stream.cancel(), 'dest');
  return { tracker, stream, abortDestSession, dropStream, compression };
}
