/** negotiate (remote half): can these two hosts migrate to each other? Pure, so it is tested on tables. */
import { FerryError } from '../../shared/errors/ferry-error.js';
import { FEATURES } from '../../shared/peer-info.js';
import type { NegotiateResponse, PeerInfo } from '../../shared/transport/messages.js';

/**
 * Returns the protocol version to speak, or throws the reason the dest cannot take the task. The dest's
 * trackers are not compared: the tracker runs on the source; `ferry check` shows the dest's for a move back.
 */
export function checkPeers(source: PeerInfo, answer: NegotiateResponse): number {
  const dest = answer.dest;
  const fail = (key: 'PROTOCOL_MISMATCH' | 'DEST_NO_CRIU' | 'PLATFORM_MISMATCH', detail: string): never => {
    throw new FerryError(key, { phase: 'negotiate', side: 'dest', sourceState: 'running', detail });
  };
  if (answer.protocolVersion === 0 || !source.protocolVersions.includes(answer.protocolVersion)) {
    fail('PROTOCOL_MISMATCH', `source speaks ${source.protocolVersions.join(',')}, dest speaks ${dest.protocolVersions.join(',')}`);
  }
  if (!dest.criuVersion) fail('DEST_NO_CRIU', `dest ${dest.hostname}: ${dest.criuProblem || 'criu not found'}`);
  if (dest.arch !== source.arch) fail('PLATFORM_MISMATCH', `source is ${source.arch}, dest is ${dest.arch}`);
  if (dest.pageSize !== source.pageSize) fail('PLATFORM_MISMATCH', `page size ${source.pageSize} on the source, ${dest.pageSize} on the dest`);
  // The page stream's hashes and zero-page flags mean nothing to a dest that does not speak them.
  const missing = FEATURES.filter((f) => !dest.features.includes(f));
  if (missing.length > 0) fail('PROTOCOL_MISMATCH', `dest ${dest.hostname} lacks ${missing.join(', ')}`);
  return answer.protocolVersion;
}
