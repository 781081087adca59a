/**
 * Which CRIU features this migration turns on: what the tree holds (file locks, connected TCP sockets) unless
 * the operator's --file-locks / --tcp-established says otherwise. Established TCP also needs a network lock
 * on the source (for the dump) and on the dest (its "criu-tcp-established" feature, for the restore): without
 * either the migration is refused here, before anything is touched, where CRIU would fail in the freeze.
 */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { resolveFeature, TCP_ESTABLISHED_FEATURE, type CriuFeatures, type FeatureChoice, type NetworkLock } from '../../shared/criu/criu-features.js';
import type { TaskCriuNeeds } from '../../shared/kernel/task-criu-needs.js';
import type { PeerInfo } from '../../shared/transport/messages.js';

export interface CriuFeaturesChoice {
  fileLocks: FeatureChoice;
  tcpEstablished: FeatureChoice;
}

export interface ChosenCriuFeatures {
  features: CriuFeatures;
  /** Set when tcpEstablished is. */
  networkLock?: NetworkLock | undefined;
  /** Why, in words, for the log. */
  note: string;
}

export function chooseCriuFeatures(choice: CriuFeaturesChoice, needs: TaskCriuNeeds, networkLock: NetworkLock | undefined, dest: PeerInfo): ChosenCriuFeatures {
  const features: CriuFeatures = {
    fileLocks: resolveFeature(choice.fileLocks, needs.fileLocks.length > 0),
    tcpEstablished: resolveFeature(choice.tcpEstablished, needs.tcpConnections.length > 0),
  };
  const conns = needs.tcpConnections.map((c) => `pid ${c.pid} ${c.local} -> ${c.remote} ${c.state}`);
  if (features.tcpEstablished) {
    const why = conns.length > 0 ? `the tree has ${conns.length} connected TCP socket(s): ${conns.slice(0, 4).join('; ')}` : '--tcp-established on';
    if (networkLock === undefined) {
      throw new FerryError('TCP_LOCK_UNAVAILABLE', { side: 'source', phase: 'negotiate', detail: `${why}; this criu has no nftables support and iptables-restore is not on PATH` });
    }
    if (!dest.features.includes(TCP_ESTABLISHED_FEATURE)) {
      throw new FerryError('TCP_LOCK_UNAVAILABLE', { side: 'dest', phase: 'negotiate', detail: `${why}; the dest does not offer "${TCP_ESTABLISHED_FEATURE}" (no network lock there)` });
    }
  }
  const locks = needs.fileLocks.map((l) => `pid ${l.pid}: ${l.lock}`);
  const note = [
    `file locks ${features.fileLocks ? 'on' : 'off'} (${choice.fileLocks}${locks.length > 0 ? `; held: ${locks.slice(0, 4).join('; ')}` : '; none held'})`,
    `tcp-established ${features.tcpEstablished ? `on, network lock ${networkLock}` : 'off'} (${choice.tcpEstablished}${conns.length > 0 ? `; ${conns.length} connected` : '; none connected'})`,
  ].join(', ');
  return { features, networkLock: features.tcpEstablished ? networkLock : undefined, note };
}
