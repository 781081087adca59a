/**
 * negotiate: everything here only reads; a refusal touches nothing. The target is inspected, CRIU and both
 * peers are checked, and the tracker is chosen (a probe of this kernel, never of the task).
 */
import type { TrackerName } from '../../trackers/tracker.js';
import { checkPeers } from '../check-peers.js';
import type { TargetTree } from '../inspect-target.js';
import type { MigrationContext } from '../migration-context.js';
import type { DestPort, MigrationPorts } from '../ports.js';

export interface Negotiated {
  target: TargetTree;
  dest: DestPort;
  protocolVersion: number;
  tracker: { name: TrackerName; note: string };
}

/** On success the caller owns `dest` and must close it; on failure it is closed here. */
export async function negotiate(ctx: MigrationContext, ports: MigrationPorts): Promise<Negotiated> {
  const { host, opts, signal } = ctx;
  const target = host.inspectTarget(opts.pid);
  await host.requireCriu();
  const local = await host.peerInfo();
  const dest = await ports.connectDest(opts.to, opts.connectTimeoutMs, signal);
  try {
    const answer = await dest.negotiate({ source: local }, signal);
    const protocolVersion = checkPeers(local, answer);
    const tracker = await host.chooseTracker(opts.tracker);
    ctx.announcer.announce({
      kind: 'started',
      migrationId: ctx.migrationId,
      pid: opts.pid,
      dest: opts.to,
      tasks: target.tasks.length,
      tracker: tracker.name,
      trackerNote: tracker.note,
    });
    return { target, dest, protocolVersion, tracker };
  } catch (e) {
    dest.close();
    throw e;
  }
}
